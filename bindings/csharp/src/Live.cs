// Live groups of the aggregator: a group's snapshot, then every delta (Client.LiveTicks & co).
using System;
using System.Collections.Generic;
using System.Runtime.Serialization;
using System.Threading;
using Langtian.Native;

namespace Langtian
{
    /// <summary>A market tick as the live group holds it (the best bid/ask level; null without one).</summary>
    [DataContract]
    public sealed class TickRow
    {
        [DataMember(Name = "venue")] public string Venue { get; set; }
        [DataMember(Name = "symbol")] public string Symbol { get; set; }
        [DataMember(Name = "seq")] public ulong Seq { get; set; }
        [DataMember(Name = "last")] public double Last { get; set; }
        [DataMember(Name = "bid")] public double? Bid { get; set; }
        [DataMember(Name = "bid_volume")] public double? BidVolume { get; set; }
        [DataMember(Name = "ask")] public double? Ask { get; set; }
        [DataMember(Name = "ask_volume")] public double? AskVolume { get; set; }
        [DataMember(Name = "volume")] public double Volume { get; set; }
        [DataMember(Name = "open_interest")] public double OpenInterest { get; set; }
        [DataMember(Name = "flags")] public uint Flags { get; set; }
        /// <summary>Exchange time, nanoseconds since the Unix epoch.</summary>
        [DataMember(Name = "ts_exchange")] public long TsExchange { get; set; }
        [DataMember(Name = "ts_arrival")] public long TsArrival { get; set; }
    }

    /// <summary>A contract (reference data) as the live group holds it.</summary>
    [DataContract]
    public sealed class ContractRow
    {
        [DataMember(Name = "venue")] public string Venue { get; set; }
        [DataMember(Name = "symbol")] public string Symbol { get; set; }
        [DataMember(Name = "name")] public string Name { get; set; }
        [DataMember(Name = "tick_size")] public double TickSize { get; set; }
        [DataMember(Name = "multiplier")] public double Multiplier { get; set; }
        [DataMember(Name = "currency")] public string Currency { get; set; }
        [DataMember(Name = "expiry")] public string Expiry { get; set; }
        [DataMember(Name = "seq")] public ulong Seq { get; set; }
        [DataMember(Name = "ts")] public long Ts { get; set; }
    }

    /// <summary>A battery channel's latest sample as the live group holds it.</summary>
    [DataContract]
    public sealed class ChannelRow
    {
        [DataMember(Name = "device_id")] public string DeviceId { get; set; }
        [DataMember(Name = "channel")] public uint Channel { get; set; }
        [DataMember(Name = "cycle")] public uint Cycle { get; set; }
        [DataMember(Name = "step")] public uint Step { get; set; }
        [DataMember(Name = "step_type")] public int StepType { get; set; }
        [DataMember(Name = "voltage")] public double Voltage { get; set; }
        [DataMember(Name = "current")] public double Current { get; set; }
        [DataMember(Name = "temperature")] public double Temperature { get; set; }
        [DataMember(Name = "capacity")] public double Capacity { get; set; }
        [DataMember(Name = "energy")] public double Energy { get; set; }
        [DataMember(Name = "soc")] public double Soc { get; set; }
        [DataMember(Name = "seq")] public ulong Seq { get; set; }
        [DataMember(Name = "ts_device")] public long TsDevice { get; set; }
        [DataMember(Name = "ts_received")] public long TsReceived { get; set; }
    }

    /// <summary>A live group's size and what it received.</summary>
    public sealed class LiveCounts
    {
        /// <summary>Records held.</summary>
        public long Records { get; internal set; }
        /// <summary>Deltas applied.</summary>
        public long Applied { get; internal set; }
        /// <summary>Deltas skipped as already contained.</summary>
        public long Stale { get; internal set; }
        /// <summary>Snapshots read again after gaps.</summary>
        public long Resyncs { get; internal set; }
        /// <summary>Messages on the delta subjects that were not a delta of the group.</summary>
        public long Rejected { get; internal set; }
    }

    /// <summary>What <see cref="LiveGroup{TRow}.Next"/> did.</summary>
    public sealed class LiveChange
    {
        /// <summary>"applied", "stale" or "resynced".</summary>
        public string Kind { get; internal set; }
        /// <summary>The delta's shard (applied).</summary>
        public uint Shard { get; internal set; }
        /// <summary>Keys the delta changed (applied), or the snapshot's version (resynced).</summary>
        public ulong Keys { get; internal set; }
    }

    /// <summary>
    /// One group of the aggregator followed live: its snapshot (a fresh one from the aggregator, else
    /// the KV copy), then every delta; a gap reads the snapshot again. Calls wait for one another.
    /// </summary>
    public sealed unsafe class LiveGroup<TRow> : IDisposable
    {
        IntPtr handle;

        internal LiveGroup(IntPtr handle, string kind, string group)
        {
            this.handle = handle;
            Kind = kind;
            Group = group;
        }

        /// <summary>"ticks", "contracts" or "battery".</summary>
        public string Kind { get; private set; }
        /// <summary>The group's name.</summary>
        public string Group { get; private set; }

        void* Handle
        {
            get
            {
                var h = handle;
                if (h == IntPtr.Zero) throw new ObjectDisposedException("LiveGroup");
                return (void*)h;
            }
        }

        /// <summary>Applies the next delta; null when <paramref name="timeout"/> passes first.</summary>
        public LiveChange Next(TimeSpan timeout)
        {
            int kind;
            uint shard;
            ulong keys;
            Interop.Check(NativeMethods.lt_live_next(Handle, (ulong)Math.Max(0, (long)timeout.TotalMilliseconds), &kind, &shard, &keys));
            switch (kind)
            {
                case 1: return new LiveChange { Kind = "applied", Shard = shard, Keys = keys };
                case 2: return new LiveChange { Kind = "stale" };
                case 3: return new LiveChange { Kind = "resynced", Keys = keys };
                default: return null;
            }
        }

        /// <summary>Applies every delta that arrives during <paramref name="duration"/>; returns how many were applied.</summary>
        public int Follow(TimeSpan duration)
        {
            var until = DateTime.UtcNow + duration;
            var applied = 0;
            TimeSpan left;
            while ((left = until - DateTime.UtcNow) > TimeSpan.Zero)
            {
                var c = Next(left);
                if (c != null && c.Kind == "applied") applied++;
            }
            return applied;
        }

        /// <summary>Every record now, sorted by key.</summary>
        public IList<TRow> Records()
        {
            LtBuffer json;
            Interop.Check(NativeMethods.lt_live_records(Handle, &json));
            return Interop.FromJson<List<TRow>>(Interop.Take(json));
        }

        /// <summary>One record by key ("shfe.rb2501", "&lt;device_id&gt;/&lt;channel&gt;"), or null.</summary>
        public TRow Get(string key)
        {
            var k = Interop.Utf8(key);
            LtBuffer json;
            fixed (byte* kp = k)
            {
                Interop.Check(NativeMethods.lt_live_get(Handle, kp, &json));
            }
            var bytes = Interop.Take(json);
            return bytes.Length == 4 && bytes[0] == (byte)'n' ? default(TRow) : Interop.FromJson<TRow>(bytes);
        }

        /// <summary>How many records the group holds, deltas applied and stale, resyncs, rejected messages.</summary>
        public LiveCounts Counts()
        {
            LtLiveCounts c;
            Interop.Check(NativeMethods.lt_live_counts(Handle, &c));
            return new LiveCounts { Records = (long)c.len, Applied = (long)c.applied, Stale = (long)c.stale, Resyncs = (long)c.resyncs, Rejected = (long)c.rejected };
        }

        /// <summary>Stops following the group.</summary>
        public void Dispose()
        {
            var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
            if (h != IntPtr.Zero) NativeMethods.lt_live_free((void*)h);
        }
    }
}
