// The Windows tray path (compiled only with the WINDOWS symbol and System.Windows.Forms; see
// docs/csharp.md). Not built or run on the Linux CI machine: Mono there has no WinForms package.
#if WINDOWS
using System;
using System.Drawing;
using System.Linq;
using System.Windows.Forms;

namespace Langtian.Samples
{
    internal static class TrayIcon
    {
        public static int Run(LangtianClient client, double intervalSeconds)
        {
            using (var icon = new NotifyIcon { Icon = SystemIcons.Application, Visible = true, Text = "Langtian" })
            using (var timer = new Timer { Interval = (int)(intervalSeconds * 1000) })
            {
                var menu = new ContextMenuStrip();
                menu.Items.Add("Exit", null, (s, e) => Application.Exit());
                icon.ContextMenuStrip = menu;
                timer.Tick += (s, e) =>
                {
                    var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                    var all = CollectorStatus.Read(client);
                    var bad = all.Any(c => c.MetricsError != null || c.Metric("collector_connected") == 0);
                    icon.Icon = bad ? SystemIcons.Warning : SystemIcons.Application;
                    // NotifyIcon.Text is limited to 63 characters; the balloon shows the full lines.
                    var tip = all.Count + " collector(s)" + (bad ? ", attention" : ", ok");
                    icon.Text = tip.Length > 63 ? tip.Substring(0, 63) : tip;
                    icon.BalloonTipText = string.Join("\n", all.Select(c => c.Line(now)));
                };
                icon.DoubleClick += (s, e) => icon.ShowBalloonTip(5000);
                timer.Start();
                Application.Run();
            }
            return 0;
        }
    }
}
#endif
