// The idiomatic C# face of liblangtian_cs (C# 7.2, builds with Mono's mcs and for
// netstandard2.0/net8.0): LangtianClient, Subscription (events), NodeRegistration.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using Langtian.Native;

namespace Langtian
{
    /// <summary>
    /// A connection to the platform's NATS. Thread-safe; calls block, the *Async variants run on the
    /// thread pool.
    /// <code>
    /// using (var lt = LangtianClient.Connect("nats://127.0.0.1:14222"))
    /// {
    ///     var r = lt.Publish("note", Encoding.UTF8.GetBytes("{\"text\":\"hi\"}"));
    ///     foreach (var n in lt.Nodes()) Console.WriteLine(n.NodeId + " " + n.Role);
    /// }
    /// </code>
    /// </summary>
    public sealed unsafe class LangtianClient : IDisposable
    {
        IntPtr handle;

        LangtianClient(IntPtr handle) { this.handle = handle; }

        /// <summary>The native library's version.</summary>
        public static string NativeVersion
        {
            get { return Marshal.PtrToStringAnsi((IntPtr)NativeMethods.lt_version()); }
        }

        /// <summary>Connects; throws <see cref="ConnectException"/> when no server answers in time.</summary>
        public static LangtianClient Connect(string url, ConnectOptions options = null)
        {
            var u = Interop.Utf8(url);
            var o = options == null ? null : Interop.Utf8(Interop.ToJson(options));
            void* h = null;
            fixed (byte* up = u)
            fixed (byte* op = o)
            {
                Interop.Check(NativeMethods.lt_connect(up, op, &h));
            }
            return new LangtianClient((IntPtr)h);
        }

        /// <summary><see cref="Connect"/> on the thread pool.</summary>
        public static Task<LangtianClient> ConnectAsync(string url, ConnectOptions options = null)
        {
            return Task.Run(() => Connect(url, options));
        }

        void* Handle
        {
            get
            {
                if (handle == IntPtr.Zero) throw new ObjectDisposedException("LangtianClient");
                return (void*)handle;
            }
        }

        /// <summary>
        /// Wraps <paramref name="payload"/> in an envelope and publishes it on
        /// lt.evt.&lt;eventType&gt;.&lt;source&gt;; QoS 1/2 return after JetStream stored it.
        /// </summary>
        public Receipt Publish(string eventType, byte[] payload, PublishOptions options = null)
        {
            var t = Interop.Utf8(eventType);
            var o = options == null ? null : Interop.Utf8(Interop.ToJson(options));
            var data = payload ?? new byte[0];
            LtBuffer receipt;
            fixed (byte* tp = t)
            fixed (byte* dp = data)
            fixed (byte* op = o)
            {
                Interop.Check(NativeMethods.lt_publish(Handle, tp, dp, (UIntPtr)data.Length, op, &receipt));
            }
            return Interop.FromJson<Receipt>(Interop.Take(receipt));
        }

        /// <summary><see cref="Publish"/> on the thread pool.</summary>
        public Task<Receipt> PublishAsync(string eventType, byte[] payload, PublishOptions options = null)
        {
            return Task.Run(() => Publish(eventType, payload, options));
        }

        /// <summary>Request/reply: the reply's bytes; <see cref="RequestException"/> when nobody answers.</summary>
        public byte[] Request(string subject, byte[] payload, int timeoutMs = 5000)
        {
            var s = Interop.Utf8(subject);
            var data = payload ?? new byte[0];
            LtBuffer reply;
            fixed (byte* sp = s)
            fixed (byte* dp = data)
            {
                Interop.Check(NativeMethods.lt_request(Handle, sp, dp, (UIntPtr)data.Length, (uint)Math.Max(0, timeoutMs), &reply));
            }
            return Interop.Take(reply);
        }

        /// <summary>
        /// Subscribes to <paramref name="subject"/> (wildcards allowed). With a handler, every message
        /// raises <see cref="Subscription.Received"/> on the subscription's own thread, in order;
        /// without one, messages queue for <see cref="Subscription.Next"/>.
        /// </summary>
        public Subscription Subscribe(string subject, EventHandler<MessageEventArgs> onMessage = null)
        {
            var sub = new Subscription(subject, onMessage);
            sub.Start(Handle);
            return sub;
        }

        /// <summary>The nodes registered in KV discovery (bucket lt_nodes unless given).</summary>
        public IList<NodeInfo> Nodes(string bucket = null)
        {
            var b = Interop.Utf8(bucket);
            LtBuffer json;
            fixed (byte* bp = b)
            {
                Interop.Check(NativeMethods.lt_nodes(Handle, bp, &json));
            }
            return Interop.FromJson<List<NodeInfo>>(Interop.Take(json));
        }

        /// <summary>
        /// Registers <paramref name="node"/> in KV discovery and heartbeats it (every TTL/3) until the
        /// registration is disposed, which removes it.
        /// </summary>
        public NodeRegistration Register(NewNode node, string bucket = null)
        {
            var j = Interop.Utf8(Interop.ToJson(node));
            var b = Interop.Utf8(bucket);
            void* h = null;
            fixed (byte* jp = j)
            fixed (byte* bp = b)
            {
                Interop.Check(NativeMethods.lt_node_register(Handle, jp, bp, &h));
            }
            return new NodeRegistration((IntPtr)h, node.NodeId);
        }

        /// <summary>Follows a venue's ticks live (groups are venues in lower case, e.g. "shfe").</summary>
        public LiveGroup<TickRow> LiveTicks(string group, string bucket = null)
        {
            return OpenLive<TickRow>("ticks", group, bucket);
        }

        /// <summary>Follows a venue's contracts (reference data) live.</summary>
        public LiveGroup<ContractRow> LiveContracts(string group, string bucket = null)
        {
            return OpenLive<ContractRow>("contracts", group, bucket);
        }

        /// <summary>Follows the battery channels live (lt up's group is "cells").</summary>
        public LiveGroup<ChannelRow> LiveChannels(string group = "cells", string bucket = null)
        {
            return OpenLive<ChannelRow>("battery", group, bucket);
        }

        LiveGroup<TRow> OpenLive<TRow>(string kind, string group, string bucket)
        {
            var k = Interop.Utf8(kind);
            var g = Interop.Utf8(group);
            var b = Interop.Utf8(bucket);
            void* h = null;
            fixed (byte* kp = k)
            fixed (byte* gp = g)
            fixed (byte* bp = b)
            {
                Interop.Check(NativeMethods.lt_live_open(Handle, kp, gp, bp, &h));
            }
            return new LiveGroup<TRow>((IntPtr)h, kind, group);
        }

        /// <summary>Closes the connection.</summary>
        public void Dispose()
        {
            var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
            if (h != IntPtr.Zero) NativeMethods.lt_client_free((void*)h);
        }
    }

    /// <summary>A live subscription; Dispose unsubscribes and waits for a running handler.</summary>
    public sealed unsafe class Subscription : IDisposable
    {
        // One static delegate for all subscriptions: it never moves and is never collected.
        static readonly NativeMethods.lt_subscribe_callback_delegate Callback = OnNative;

        readonly BlockingCollection<Message> queue;
        GCHandle self;
        IntPtr native;
        long received;
        long handlerErrors;

        internal Subscription(string subject, EventHandler<MessageEventArgs> onMessage)
        {
            Subject = subject;
            if (onMessage != null) Received += onMessage;
            else queue = new BlockingCollection<Message>();
        }

        /// <summary>The subject (pattern) subscribed to.</summary>
        public string Subject { get; private set; }

        /// <summary>Raised for every message, on the subscription's thread, in arrival order.</summary>
        public event EventHandler<MessageEventArgs> Received;

        /// <summary>Raised when a <see cref="Received"/> handler threw (the message is then skipped).</summary>
        public event EventHandler<HandlerErrorEventArgs> HandlerFailed;

        /// <summary>Messages received so far.</summary>
        public long ReceivedCount { get { return Interlocked.Read(ref received); } }

        /// <summary>Handler exceptions so far.</summary>
        public long HandlerErrors { get { return Interlocked.Read(ref handlerErrors); } }

        internal void Start(void* client)
        {
            self = GCHandle.Alloc(this);
            var s = Interop.Utf8(Subject);
            void* h = null;
            int status;
            fixed (byte* sp = s)
            {
                status = NativeMethods.lt_subscribe(client, sp, Callback, (UIntPtr)(ulong)(long)GCHandle.ToIntPtr(self), &h);
            }
            if (status != 0)
            {
                var e = LangtianException.FromStatus(status, Interop.LastError());
                self.Free();
                throw e;
            }
            native = (IntPtr)h;
        }

        /// <summary>The next queued message, or null after <paramref name="timeout"/> (queue mode only).</summary>
        public Message Next(TimeSpan timeout)
        {
            if (queue == null) throw new InvalidOperationException("this subscription delivers to its Received handler");
            Message m;
            return queue.TryTake(out m, timeout) ? m : null;
        }

        static void OnNative(UIntPtr userData, LtMessage* msg)
        {
            try
            {
                var target = GCHandle.FromIntPtr((IntPtr)(long)(ulong)userData).Target as Subscription;
                if (target != null) target.Deliver(Convert(msg));
            }
            catch (Exception)
            {
                // Never let an exception cross into native code; Deliver reports handler errors.
            }
        }

        static Message Convert(LtMessage* m)
        {
            var msg = new Message
            {
                Subject = Interop.Text(m->subject),
                Data = Interop.Bytes(m->data),
                IsEnvelope = m->is_envelope != 0,
            };
            if (msg.IsEnvelope)
            {
                msg.EventId = Interop.Text(m->event_id);
                msg.EventType = Interop.Text(m->event_type);
                msg.Source = Interop.Text(m->source);
                msg.ContentType = Interop.Text(m->content_type);
                msg.TimestampNs = m->timestamp_ns;
                msg.Payload = Interop.Bytes(m->payload);
            }
            return msg;
        }

        void Deliver(Message m)
        {
            Interlocked.Increment(ref received);
            if (queue != null) queue.Add(m);
            var h = Received;
            if (h == null) return;
            try
            {
                h(this, new MessageEventArgs(m));
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref handlerErrors);
                var f = HandlerFailed;
                if (f != null)
                {
                    try { f(this, new HandlerErrorEventArgs(m, e)); }
                    catch (Exception) { }
                }
            }
        }

        /// <summary>Unsubscribes; returns after the last handler call finished.</summary>
        public void Dispose()
        {
            var h = Interlocked.Exchange(ref native, IntPtr.Zero);
            if (h == IntPtr.Zero) return;
            NativeMethods.lt_subscription_free((void*)h);
            if (self.IsAllocated) self.Free();
            if (queue != null) queue.CompleteAdding();
        }
    }

    /// <summary>A node registered in KV discovery; heartbeats until disposed, which removes it.</summary>
    public sealed unsafe class NodeRegistration : IDisposable
    {
        IntPtr handle;

        internal NodeRegistration(IntPtr handle, string nodeId)
        {
            this.handle = handle;
            NodeId = nodeId;
        }

        public string NodeId { get; private set; }

        /// <summary>Writes a heartbeat now with a new load figure (kept by later automatic ones); returns the KV revision.</summary>
        public ulong Heartbeat(double load)
        {
            if (handle == IntPtr.Zero) throw new ObjectDisposedException("NodeRegistration");
            ulong rev;
            Interop.Check(NativeMethods.lt_node_heartbeat((void*)handle, load, &rev));
            return rev;
        }

        /// <summary>Removes the node from KV at once (watchers see it leave); throws when the KV delete fails.</summary>
        public void Unregister()
        {
            var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
            if (h != IntPtr.Zero) Interop.Check(NativeMethods.lt_node_free((void*)h));
        }

        /// <summary><see cref="Unregister"/>, without throwing (the KV entry then expires after its TTL).</summary>
        public void Dispose()
        {
            try { Unregister(); }
            catch (LangtianException) { }
        }
    }
}
