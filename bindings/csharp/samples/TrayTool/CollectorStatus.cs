// What the tray tool shows: every collector (role collector or lt-up) found in KV discovery, with
// the counters of its Prometheus /metrics endpoint.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net;
using System.Text;

namespace Langtian.Samples
{
    public sealed class CollectorStatus
    {
        public NodeInfo Node;
        /// <summary>Metric name → value (summed over label sets); empty when /metrics was unreachable.</summary>
        public Dictionary<string, double> Metrics = new Dictionary<string, double>();
        /// <summary>Why the metrics could not be read, or null.</summary>
        public string MetricsError;

        public double Metric(string name)
        {
            double v;
            return Metrics.TryGetValue(name, out v) ? v : 0;
        }

        /// <summary>One line, e.g. for a console or a tray icon's tooltip.</summary>
        public string Line(long nowMs)
        {
            var sb = new StringBuilder();
            sb.AppendFormat(CultureInfo.InvariantCulture, "{0} [{1}] seen {2:0.0} s ago", Node.NodeId, Node.Role, (nowMs - Node.LastSeenMs) / 1000.0);
            if (MetricsError != null)
            {
                sb.Append(" | metrics: ").Append(MetricsError);
            }
            else
            {
                sb.AppendFormat(CultureInfo.InvariantCulture,
                    " | received {0} published {1} dropped {2} malformed {3} backlog {4} nats {5}",
                    Metric("collector_records_received"), Metric("collector_records_published"),
                    Metric("collector_dropped"), Metric("collector_malformed"), Metric("collector_backlog"),
                    Metric("collector_connected") > 0 ? "connected" : "DISCONNECTED");
            }
            return sb.ToString();
        }

        /// <summary>The collectors registered now, each with its metrics.</summary>
        public static List<CollectorStatus> Read(LangtianClient client)
        {
            var result = new List<CollectorStatus>();
            foreach (var n in client.Nodes())
            {
                if (n.Role != "collector" && n.Role != "lt-up") continue;
                var s = new CollectorStatus { Node = n };
                var url = n.Endpoint("metrics");
                if (url == null)
                {
                    s.MetricsError = "no metrics endpoint registered";
                }
                else
                {
                    try
                    {
                        s.Metrics = ParsePrometheus(Fetch(url));
                    }
                    catch (Exception e)
                    {
                        s.MetricsError = url + ": " + e.Message;
                    }
                }
                result.Add(s);
            }
            return result;
        }

        static string Fetch(string url)
        {
            var req = (HttpWebRequest)WebRequest.Create(url);
            req.Timeout = 3000;
            using (var resp = req.GetResponse())
            using (var r = new StreamReader(resp.GetResponseStream(), Encoding.UTF8))
            {
                return r.ReadToEnd();
            }
        }

        /// <summary>Prometheus text format → name → value, summed over label sets.</summary>
        public static Dictionary<string, double> ParsePrometheus(string text)
        {
            var d = new Dictionary<string, double>();
            foreach (var raw in text.Split('\n'))
            {
                var line = raw.Trim();
                if (line.Length == 0 || line[0] == '#') continue;
                var brace = line.IndexOf('{');
                var space = line.LastIndexOf(' ');
                if (space <= 0) continue;
                var name = brace > 0 && brace < space ? line.Substring(0, brace) : line.Substring(0, line.IndexOf(' '));
                double v;
                if (!double.TryParse(line.Substring(space + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out v)) continue;
                double old;
                d[name] = d.TryGetValue(name, out old) ? old + v : v;
            }
            return d;
        }
    }
}
