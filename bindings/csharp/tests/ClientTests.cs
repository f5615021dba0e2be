// The C# binding against real services: `lt up` (NATS + JetStream, collector, query service, KV
// discovery, /metrics) fed by `lt sim battery`, and a bare nats-server. Nothing is mocked.
//   LT_BIN, LANGTIAN_NATS_SERVER, TRAY_TOOL (the sample's exe) name the programs.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Text;
using System.Threading;

namespace Langtian.Tests
{
    public static class ClientTests
    {
        static string ltBin, natsServer, trayTool, url, dataDir;
        static int udpPort;
        static LangtianClient lt;

        public static int Main()
        {
            var target = Runner.HomeTarget();
            ltBin = Runner.Env("LT_BIN", target + "/debug/lt");
            natsServer = Runner.Env("LANGTIAN_NATS_SERVER", "nats-server");
            trayTool = Runner.Env("TRAY_TOOL", "TrayTool.exe");
            int nats = Proc.FreeTcpPort(), http = Proc.FreeTcpPort(), metrics = Proc.FreeTcpPort();
            udpPort = Proc.FreeUdpPort();
            var dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "lt-cs-" + Guid.NewGuid().ToString("N"));
            url = "nats://127.0.0.1:" + nats;
            dataDir = dir;
            Console.WriteLine("native library " + LangtianClient.NativeVersion + "; lt up on " + url);
            using (new Proc(ltBin, string.Format("up --data-dir {0} --nats-port {1} --nats-http-port {2} --udp 127.0.0.1:{3} --metrics-addr 127.0.0.1:{4} --no-sim --no-live",
                dir, nats, http, udpPort, metrics), "query service on"))
            using (lt = LangtianClient.Connect(url, new ConnectOptions { Name = "cs-tests" }))
            {
                return Runner.RunAll(typeof(ClientTests));
            }
        }

        static byte[] Utf8(string s) { return Encoding.UTF8.GetBytes(s); }

        [Test]
        public static void NoServerIsAConnectException()
        {
            var e = Assert.Throws<ConnectException>(() => LangtianClient.Connect("nats://127.0.0.1:1", new ConnectOptions { TimeoutMs = 1000 }), "connect to a closed port");
            Assert.Equal("ERR_CONNECT", e.Code, "code");
            Assert.True(e.Message.Contains("127.0.0.1:1"), "the message names the URL: " + e.Message);
        }

        [Test]
        public static void PublishIsStoredDeliveredAndDeduplicated()
        {
            var got = new List<Message>();
            using (var sub = lt.Subscribe("lt.evt.note.>", (s, e) => { lock (got) got.Add(e.Message); }))
            {
                var r = lt.Publish("note", Utf8("{\"text\":\"hello\"}"), new PublishOptions { Source = "cstest", EventId = "cs-note-1" });
                Assert.Equal("lt.evt.note.cstest", r.Subject, "subject");
                Assert.True(r.Stream != null && r.Sequence > 0 && !r.Duplicate, "stored once: stream " + r.Stream + " seq " + r.Sequence);
                Assert.Eventually(() => { lock (got) return got.Count == 1; }, "the message via the handler");
                var m = got[0];
                Assert.True(m.IsEnvelope, "decoded as an envelope");
                Assert.Equal("note", m.EventType, "event type");
                Assert.Equal("cstest", m.Source, "source");
                Assert.Equal("cs-note-1", m.EventId, "event id");
                Assert.Equal("{\"text\":\"hello\"}", m.PayloadText, "payload");
                Assert.True(m.TimestampNs > 1600000000000000000L, "timestamp in ns: " + m.TimestampNs);
                var again = lt.Publish("note", Utf8("{\"text\":\"hello\"}"), new PublishOptions { Source = "cstest", EventId = "cs-note-1" });
                Assert.True(again.Duplicate, "the same event id again is a duplicate");
                Assert.Equal(r.Sequence, again.Sequence, "the duplicate points at the first copy");
            }
        }

        [Test]
        public static void AnNkeySeedConnectsAsThatLtUpService()
        {
            // lt up keeps each service's NKey seed; with one, the client is that NATS user and the
            // server enforces its permissions: the collector may store events, not market data.
            var seed = System.IO.File.ReadAllText(System.IO.Path.Combine(dataDir, "nats", "keys", "collector.nk"));
            using (var c = LangtianClient.Connect(url, new ConnectOptions { Name = "cs-as-collector", NkeySeed = seed, InboxPrefix = "_LT.collector" }))
            {
                Assert.True(c.Publish("note", Utf8("{}"), new PublishOptions { Source = "cs-nkey" }).Sequence > 0, "the collector may store events");
                var e = Assert.Throws<PublishException>(() => c.Publish("x", Utf8("1"), new PublishOptions { Subject = "xy.md.tick.cs.0" }), "market data is not the collector's");
                Assert.True(e.Message.Contains("not allowed"), "says why: " + e.Message);
            }
            Assert.Throws<ConnectException>(() => LangtianClient.Connect(url, new ConnectOptions { NkeySeed = "SUnotaseed", TimeoutMs = 2000 }), "a bad seed");
        }

        [Test]
        public static void PublishErrorsAreTyped()
        {
            var e = Assert.Throws<LangtianArgumentException>(() => lt.Publish("note", Utf8("{}"), new PublishOptions { Qos = 7 }), "QoS 7");
            Assert.Equal("ERR_ARGUMENT", e.Code, "code");
            Assert.True(e.Message.Contains("qos"), "names the argument: " + e.Message);
            Assert.Equal("ERR_PUBLISH", Assert.Throws<PublishException>(() => lt.Publish("note", Utf8("{}"), new PublishOptions { Subject = "lt.analysis.nowhere" }), "no stream").Code, "code");
            Assert.Equal("ERR_ENVELOPE", Assert.Throws<EnvelopeException>(() => lt.Publish("", Utf8("{}")), "empty event type").Code, "code");
            var qos0 = lt.Publish("note", Utf8("{}"), new PublishOptions { Qos = 0 });
            Assert.True(qos0.Stream == null && qos0.Sequence == null, "QoS 0 has no PubAck");
        }

        [Test]
        public static void QueueModeKeepsOrderAndDisposeStops()
        {
            Message m;
            using (var sub = lt.Subscribe("lt.evt.seq.>"))
            {
                for (var i = 0; i < 20; i++) lt.Publish("seq", Utf8(i.ToString()), new PublishOptions { Qos = 0, Source = "cs" });
                for (var i = 0; i < 20; i++)
                {
                    m = sub.Next(TimeSpan.FromSeconds(5));
                    Assert.True(m != null, "message " + i);
                    Assert.Equal(i.ToString(), m.PayloadText, "order");
                }
                sub.Dispose();
                lt.Publish("seq", Utf8("late"), new PublishOptions { Qos = 0, Source = "cs" });
                Assert.Equal(20L, sub.ReceivedCount, "nothing after Dispose");
            }
        }

        [Test]
        public static void AThrowingHandlerIsReportedAndDeliveryGoesOn()
        {
            var failures = 0;
            var ok = new List<string>();
            EventHandler<MessageEventArgs> handler = (s, e) =>
            {
                if (e.Message.PayloadText == "bad") throw new InvalidOperationException("handler bug");
                lock (ok) ok.Add(e.Message.PayloadText);
            };
            using (var sub = lt.Subscribe("lt.evt.mixed.>", handler))
            {
                sub.HandlerFailed += (s, e) => Interlocked.Increment(ref failures);
                foreach (var p in new[] { "a", "bad", "b" }) lt.Publish("mixed", Utf8(p), new PublishOptions { Qos = 0, Source = "cs" });
                Assert.Eventually(() => { lock (ok) return ok.Count == 2; }, "both good messages");
                Assert.Equal("a,b", string.Join(",", ok), "good messages in order");
                Assert.Equal(1L, sub.HandlerErrors, "one handler error counted");
                Assert.Equal(1, failures, "HandlerFailed raised once");
            }
        }

        [Test]
        public static void RequestReply()
        {
            var reply = Encoding.UTF8.GetString(lt.Request("lt.query.v1", Utf8("not json"), 5000));
            Assert.True(reply.Contains("\"bad_request\""), "the query service answers a malformed request: " + reply);
            Assert.Equal("ERR_REQUEST", Assert.Throws<RequestException>(() => lt.Request("lt.analysis.nobody", Utf8("x"), 1000), "no responders").Code, "code");
            // A subject lt up's local user may not publish to: refused at once, and the message says so.
            var e = Assert.Throws<RequestException>(() => lt.Request("nobody.listens", Utf8("x"), 5000), "not allowed");
            Assert.True(e.Message.Contains("not allowed"), "says why: " + e.Message);
        }

        [Test]
        public static void RegisterHeartbeatNodesUnregister()
        {
            var before = lt.Nodes();
            Assert.True(before.Any(n => n.Role == "lt-up" && n.Endpoint("metrics") != null), "lt up is registered with its metrics URL");
            var node = new NewNode("cs-tray-1", "tray");
            node.Endpoints["ui"] = "console";
            node.Metadata["os"] = "linux";
            ulong r1, r2;
            using (var reg = lt.Register(node))
            {
                var mine = lt.Nodes().SingleOrDefault(n => n.NodeId == "cs-tray-1");
                Assert.True(mine != null, "the node is listed");
                Assert.Equal("tray", mine.Role, "role");
                Assert.Equal("console", mine.Endpoint("ui"), "endpoint");
                Assert.Equal("linux", mine.Metadata["os"], "metadata");
                r1 = reg.Heartbeat(0.25);
                r2 = reg.Heartbeat(0.5);
                Assert.True(r2 > r1, "heartbeats write new revisions: " + r1 + " then " + r2);
                Assert.Equal(0.5, lt.Nodes().Single(n => n.NodeId == "cs-tray-1").Load, "load from the heartbeat");
            }
            Assert.True(lt.Nodes().All(n => n.NodeId != "cs-tray-1"), "gone after Dispose");
            Assert.Equal("ERR_DISCOVERY", Assert.Throws<DiscoveryException>(() => lt.Register(new NewNode("bad id with spaces", "x")), "bad node id").Code, "code");
        }

        [Test]
        public static void LiveGroupsFollowTheAggregator()
        {
            // A second lt up with its simulators, aggregator and gateway (a small battery fleet).
            int nats = Proc.FreeTcpPort(), http = Proc.FreeTcpPort(), udp = Proc.FreeUdpPort(), gw = Proc.FreeTcpPort();
            var dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "lt-cs-live-" + Guid.NewGuid().ToString("N"));
            var liveUrl = "nats://127.0.0.1:" + nats;
            using (new Proc(ltBin, string.Format("up --data-dir {0} --nats-port {1} --nats-http-port {2} --udp 127.0.0.1:{3} --metrics-addr off --gateway-addr 127.0.0.1:{4} --tick-rate 400 --rate 200 --devices 2 --channels 8",
                dir, nats, http, udp, gw), "query service on"))
            using (var c = LangtianClient.Connect(liveUrl, new ConnectOptions { Name = "cs-live" }))
            {
                // The subject of the first delta names a group: xy.md.tick.<group>.<shard>.
                string group = null;
                using (var sub = c.Subscribe("xy.md.tick.>"))
                {
                    var m = sub.Next(TimeSpan.FromSeconds(30));
                    Assert.True(m != null, "a tick delta from the aggregator");
                    group = m.Subject.Split('.')[3];
                }
                using (var ticks = c.LiveTicks(group))
                {
                    Assert.Equal("ticks", ticks.Kind, "kind");
                    var before = ticks.Records().ToDictionary(r => r.Symbol, r => r.Seq);
                    Assert.True(before.Count > 0, "the snapshot holds the venue");
                    Assert.True(ticks.Follow(TimeSpan.FromMilliseconds(1500)) > 0, "deltas applied");
                    var rows = ticks.Records();
                    Assert.True(rows.All(r => r.Venue.ToLowerInvariant() == group), "every row of the venue");
                    Assert.True(rows.All(r => !before.ContainsKey(r.Symbol) || r.Seq >= before[r.Symbol]), "sequences only move forward");
                    Assert.True(rows.Any(r => before.ContainsKey(r.Symbol) && r.Seq > before[r.Symbol]), "ticks kept coming");
                    Assert.True(rows.All(r => r.TsExchange > 1600000000000000000L), "exchange time in ns");
                    var one = rows[0];
                    Assert.Equal(one.Symbol, ticks.Get(one.Venue + "." + one.Symbol).Symbol, "get by key");
                    Assert.True(ticks.Get("nope.x") == null, "no such key");
                    var counts = ticks.Counts();
                    Assert.True(counts.Applied > 0 && counts.Rejected == 0 && counts.Records == rows.Count, "counts");
                }
                using (var contracts = c.LiveContracts(group))
                {
                    Assert.True(contracts.Records().All(r => r.Multiplier > 0), "contracts with multipliers");
                }
                using (var cells = c.LiveChannels())
                {
                    Assert.Eventually(() => { cells.Follow(TimeSpan.FromMilliseconds(200)); return cells.Records().Count == 16; }, "all 16 channels");
                }
                var e = Assert.Throws<NoSnapshotException>(() => c.LiveTicks("nowhere"), "a group nobody has seen");
                Assert.True(e.Message.Contains("nowhere") && e.Code == "ERR_LIVE_NO_SNAPSHOT", e.Message);
                Assert.Throws<LangtianArgumentException>(() => c.LiveTicks("a.b"), "a group that is not one token");
            }
        }

        [Test]
        public static void TlsCaTrustsLtUpWithNatsTls()
        {
            // lt up --nats-tls requires TLS with its own local CA: without TlsCa the server's
            // certificate is not trusted; with it the client connects and stores an event.
            int nats = Proc.FreeTcpPort(), http = Proc.FreeTcpPort(), udp = Proc.FreeUdpPort();
            var dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "lt-cs-tls-" + Guid.NewGuid().ToString("N"));
            var tlsUrl = "nats://127.0.0.1:" + nats;
            using (new Proc(ltBin, string.Format("up --data-dir {0} --nats-port {1} --nats-http-port {2} --udp 127.0.0.1:{3} --metrics-addr off --no-sim --no-live --no-flow --nats-tls",
                dir, nats, http, udp), "registered node"))
            {
                var e = Assert.Throws<ConnectException>(() => LangtianClient.Connect(tlsUrl, new ConnectOptions { TimeoutMs = 2000 }), "an untrusted certificate");
                Assert.True(e.Message.Contains("UnknownIssuer"), "says why: " + e.Message);
                var ca = System.IO.Path.Combine(dir, "nats", "tls", "ca.pem");
                using (var c = LangtianClient.Connect(tlsUrl, new ConnectOptions { Name = "cs-tls", TlsCa = ca }))
                {
                    Assert.True(c.Publish("note", Utf8("{}"), new PublishOptions { Source = "cs-tls" }).Sequence > 0, "an event stored over TLS");
                }
            }
        }

        [Test]
        public static void AServerWithoutJetStream()
        {
            var port = Proc.FreeTcpPort();
            using (new Proc(natsServer, "-a 127.0.0.1 -p " + port, "Server is ready"))
            using (var c = LangtianClient.Connect("nats://127.0.0.1:" + port))
            {
                var e = Assert.Throws<PublishException>(() => c.Publish("note", Utf8("{}")), "QoS 1 without JetStream");
                Assert.True(e.Message.Contains("no JetStream"), "says why: " + e.Message);
                Assert.Throws<DiscoveryException>(() => c.Nodes(), "KV without JetStream");
                // Core NATS works: QoS 0 and subscriptions.
                using (var sub = c.Subscribe("lt.evt.>"))
                {
                    c.Publish("ping", Utf8("1"), new PublishOptions { Qos = 0 });
                    var m = sub.Next(TimeSpan.FromSeconds(5));
                    Assert.True(m != null && m.EventType == "ping", "QoS 0 round trip");
                }
            }
        }

        [Test]
        public static void AsyncVariants()
        {
            var c = LangtianClient.ConnectAsync(url).Result;
            using (c)
            {
                var r = c.PublishAsync("note", Utf8("{}"), new PublishOptions { Source = "csasync" }).Result;
                Assert.True(r.Sequence > 0, "stored");
            }
        }

        [Test]
        public static void TrayToolShowsTheCollectorFromDiscoveryAndMetrics()
        {
            Proc.Run(ltBin, "sim battery --to 127.0.0.1:" + udpPort + " --count 500 --rate 5000 --devices 2 --channels 4");
            string output = null;
            Assert.Eventually(() =>
            {
                output = RunTray();
                return output.Contains("received 500 published 500");
            }, "the tray tool to show 500 records received and published", 30000);
            Assert.True(output.Contains("[lt-up]") && output.Contains("nats connected"), output);
        }

        static string RunTray()
        {
            var p = Process.Start(new ProcessStartInfo("mono", trayTool + " --nats " + url + " --once")
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
            });
            var text = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return text;
        }
    }
}
