// Langtian tray tool: shows collector status from KV discovery and metrics.
// On Linux (and anywhere) it is a console program; on Windows, built with the WINDOWS symbol, the
// same status goes into a NotifyIcon (TrayIcon.Windows.cs).
//
//   mono TrayTool.exe [--nats nats://127.0.0.1:14222] [--interval 2] [--once]
using System;
using System.Globalization;
using System.Threading;

namespace Langtian.Samples
{
    public static class Program
    {
        public static int Main(string[] args)
        {
            var url = "nats://127.0.0.1:14222";
            var interval = 2.0;
            var once = false;
            for (var i = 0; i < args.Length; i++)
            {
                switch (args[i])
                {
                    case "--nats": url = args[++i]; break;
                    case "--interval": interval = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                    case "--once": once = true; break;
                    case "--help":
                        Console.WriteLine("usage: TrayTool [--nats URL] [--interval SECONDS] [--once]");
                        Console.WriteLine("Lists the collectors registered in KV discovery (lt_nodes) with their /metrics counters.");
                        return 0;
                    default:
                        Console.Error.WriteLine("unknown argument: " + args[i] + " (see --help)");
                        return 2;
                }
            }
            try
            {
                using (var client = LangtianClient.Connect(url, new ConnectOptions { Name = "lt-tray", TimeoutMs = 3000 }))
                {
#if WINDOWS
                    if (!once) return TrayIcon.Run(client, interval);
#endif
                    for (;;)
                    {
                        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                        var all = CollectorStatus.Read(client);
                        Console.WriteLine(DateTime.Now.ToString("HH:mm:ss") + "  " + all.Count + " collector(s)");
                        foreach (var s in all) Console.WriteLine("  " + s.Line(now));
                        if (once) return all.Count > 0 ? 0 : 1;
                        Thread.Sleep(TimeSpan.FromSeconds(interval));
                    }
                }
            }
            catch (LangtianException e)
            {
                Console.Error.WriteLine("lt-tray: " + e.Code + ": " + e.Message);
                return 1;
            }
        }
    }
}
