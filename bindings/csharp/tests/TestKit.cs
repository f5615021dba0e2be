// A tiny test runner for Mono's mcs (C# 7.2, no xunit in Debian): public static methods marked
// [Test] run in declaration order; it prints PASS/FAIL lines and "N passed, N failed".
using System;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Text;
using System.Threading;

namespace Langtian.Tests
{
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class TestAttribute : Attribute { }

    public static class Assert
    {
        public static void True(bool cond, string what)
        {
            if (!cond) throw new Exception("expected: " + what);
        }

        public static void Equal<T>(T expected, T actual, string what)
        {
            if (!Equals(expected, actual)) throw new Exception(what + ": expected <" + expected + "> but was <" + actual + ">");
        }

        public static TE Throws<TE>(Action a, string what) where TE : Exception
        {
            try { a(); }
            catch (TE e) { return e; }
            catch (Exception e) { throw new Exception(what + ": expected " + typeof(TE).Name + " but got " + e.GetType().Name + ": " + e.Message); }
            throw new Exception(what + ": expected " + typeof(TE).Name + " but nothing was thrown");
        }

        /// <summary>Polls <paramref name="cond"/> until true (no fixed sleeps as synchronisation).</summary>
        public static void Eventually(Func<bool> cond, string what, int timeoutMs = 20000)
        {
            var sw = Stopwatch.StartNew();
            while (!cond())
            {
                if (sw.ElapsedMilliseconds > timeoutMs) throw new Exception("timed out after " + timeoutMs + " ms waiting for " + what);
                Thread.Sleep(50);
            }
        }
    }

    /// <summary>Real processes for the tests: `lt up` and a bare nats-server on free ports.</summary>
    public sealed class Proc : IDisposable
    {
        readonly Process p;
        readonly StringBuilder output = new StringBuilder();

        public Proc(string file, string args, string readyText)
        {
            p = new Process
            {
                StartInfo = new ProcessStartInfo(file, args)
                {
                    UseShellExecute = false,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                },
            };
            var ready = new ManualResetEventSlim();
            DataReceivedEventHandler onLine = (s, e) =>
            {
                if (e.Data == null) return;
                lock (output) output.AppendLine(e.Data);
                if (e.Data.Contains(readyText)) ready.Set();
            };
            p.OutputDataReceived += onLine;
            p.ErrorDataReceived += onLine;
            p.Start();
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            var sw = Stopwatch.StartNew();
            while (!ready.Wait(100))
            {
                if (p.HasExited || sw.ElapsedMilliseconds > 60000)
                    throw new Exception(file + " " + args + " was not ready (\"" + readyText + "\"):\n" + Output);
            }
        }

        public string Output { get { lock (output) return output.ToString(); } }

        public void Dispose()
        {
            if (p.HasExited) return;
            // SIGINT lets lt up drain and stop its nats-server; kill as a last resort.
            var kill = Process.Start("kill", "-INT " + p.Id);
            if (kill != null) kill.WaitForExit();
            if (!p.WaitForExit(30000)) p.Kill();
        }

        public static int FreeTcpPort()
        {
            var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            var port = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            return port;
        }

        public static int FreeUdpPort()
        {
            using (var u = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0)))
                return ((IPEndPoint)u.Client.LocalEndPoint).Port;
        }

        public static void Run(string file, string args)
        {
            var p = Process.Start(new ProcessStartInfo(file, args) { UseShellExecute = false });
            if (p == null || !p.WaitForExit(120000) || p.ExitCode != 0) throw new Exception(file + " " + args + " failed");
        }
    }

    public static class Runner
    {
        public static int RunAll(Type type)
        {
            int passed = 0, failed = 0;
            var tests = type.GetMethods(BindingFlags.Public | BindingFlags.Static)
                .Where(m => m.GetCustomAttributes(typeof(TestAttribute), false).Length > 0)
                .OrderBy(m => m.MetadataToken);
            foreach (var m in tests)
            {
                var sw = Stopwatch.StartNew();
                try
                {
                    m.Invoke(null, null);
                    passed++;
                    Console.WriteLine("PASS " + type.Name + "." + m.Name + " (" + sw.ElapsedMilliseconds + " ms)");
                }
                catch (TargetInvocationException e)
                {
                    failed++;
                    Console.WriteLine("FAIL " + type.Name + "." + m.Name + ": " + e.InnerException);
                }
            }
            Console.WriteLine(passed + " passed, " + failed + " failed");
            return failed == 0 ? 0 : 1;
        }

        public static string Env(string name, string fallback)
        {
            var v = Environment.GetEnvironmentVariable(name);
            return string.IsNullOrEmpty(v) ? fallback : v;
        }

        public static string HomeTarget()
        {
            return Env("LANGTIAN_TARGET_DIR", Env("CARGO_TARGET_DIR",
                Path.Combine(Environment.GetEnvironmentVariable("HOME") ?? "/root", ".cache/langtian/target")));
        }
    }
}
