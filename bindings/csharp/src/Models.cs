// The data the binding exchanges: options in, receipts, messages and node records out.
using System;
using System.Collections.Generic;
using System.Runtime.Serialization;

namespace Langtian
{
    /// <summary>How to connect (all optional).</summary>
    [DataContract]
    public sealed class ConnectOptions
    {
        /// <summary>Client name shown by the server (default "langtian-csharp").</summary>
        [DataMember(Name = "name", EmitDefaultValue = false)] public string Name { get; set; }
        [DataMember(Name = "token", EmitDefaultValue = false)] public string Token { get; set; }
        [DataMember(Name = "user", EmitDefaultValue = false)] public string User { get; set; }
        [DataMember(Name = "password", EmitDefaultValue = false)] public string Password { get; set; }
        /// <summary>A credentials file (user JWT + NKey seed).</summary>
        [DataMember(Name = "creds", EmitDefaultValue = false)] public string Creds { get; set; }
        /// <summary>An NKey user seed ("SU…", e.g. the text of lt up's .langtian/nats/keys/&lt;service&gt;.nk).</summary>
        [DataMember(Name = "nkeySeed", EmitDefaultValue = false)] public string NkeySeed { get; set; }
        /// <summary>Inbox prefix instead of "_INBOX" (an lt up service's user reads only "_LT.&lt;service&gt;").</summary>
        [DataMember(Name = "inboxPrefix", EmitDefaultValue = false)] public string InboxPrefix { get; set; }
        /// <summary>A CA certificate (PEM file) to trust; the connection then requires TLS (lt up --nats-tls: .langtian/nats/tls/ca.pem).</summary>
        [DataMember(Name = "tlsCa", EmitDefaultValue = false)] public string TlsCa { get; set; }
        /// <summary>Give up connecting after this many milliseconds (default 5000).</summary>
        [DataMember(Name = "timeoutMs", EmitDefaultValue = false)] public int? TimeoutMs { get; set; }
    }

    /// <summary>How to publish an event (all optional).</summary>
    [DataContract]
    public sealed class PublishOptions
    {
        /// <summary>0 fire and forget, 1 JetStream PubAck (default), 2 PubAck + de-duplication by event id.</summary>
        [DataMember(Name = "qos", EmitDefaultValue = false)] public int? Qos { get; set; }
        /// <summary>Source system (default "csharp").</summary>
        [DataMember(Name = "source", EmitDefaultValue = false)] public string Source { get; set; }
        /// <summary>Subject prefix (default "lt.evt"): the subject is prefix.eventType.source.</summary>
        [DataMember(Name = "prefix", EmitDefaultValue = false)] public string Prefix { get; set; }
        /// <summary>An exact subject instead of the prefix rule.</summary>
        [DataMember(Name = "subject", EmitDefaultValue = false)] public string Subject { get; set; }
        /// <summary>Event id (default generated); a repeat is a no-op within the stream's duplicate window.</summary>
        [DataMember(Name = "eventId", EmitDefaultValue = false)] public string EventId { get; set; }
        /// <summary>MIME type of the payload (default application/json).</summary>
        [DataMember(Name = "contentType", EmitDefaultValue = false)] public string ContentType { get; set; }
        [DataMember(Name = "partitionKey", EmitDefaultValue = false)] public string PartitionKey { get; set; }
    }

    /// <summary>What JetStream said about a published event.</summary>
    [DataContract]
    public sealed class Receipt
    {
        [DataMember(Name = "subject")] public string Subject { get; set; }
        [DataMember(Name = "eventId")] public string EventId { get; set; }
        /// <summary>The stream that stored it (null for QoS 0).</summary>
        [DataMember(Name = "stream")] public string Stream { get; set; }
        /// <summary>Its stream sequence (null for QoS 0).</summary>
        [DataMember(Name = "sequence")] public ulong? Sequence { get; set; }
        /// <summary>The server had this event id already.</summary>
        [DataMember(Name = "duplicate")] public bool Duplicate { get; set; }
    }

    /// <summary>A node registered in KV discovery (bucket lt_nodes).</summary>
    [DataContract]
    public sealed class NodeInfo
    {
        [DataMember(Name = "node_id")] public string NodeId { get; set; }
        /// <summary>collector, lt-up, aggregator, gateway, ...</summary>
        [DataMember(Name = "role")] public string Role { get; set; }
        [DataMember(Name = "version")] public string Version { get; set; }
        [DataMember(Name = "host")] public string Host { get; set; }
        [DataMember(Name = "started_at_ms")] public long StartedAtMs { get; set; }
        [DataMember(Name = "last_seen_ms")] public long LastSeenMs { get; set; }
        [DataMember(Name = "load")] public double Load { get; set; }
        /// <summary>Named endpoints: "metrics" (a Prometheus URL), "udp", "nats", ...</summary>
        [DataMember(Name = "endpoints")] public Dictionary<string, string> Endpoints { get; set; }
        [DataMember(Name = "metadata")] public Dictionary<string, string> Metadata { get; set; }

        /// <summary>The endpoint named <paramref name="name"/>, or null.</summary>
        public string Endpoint(string name)
        {
            string v;
            return Endpoints != null && Endpoints.TryGetValue(name, out v) ? v : null;
        }
    }

    /// <summary>A node to register: id and role required.</summary>
    [DataContract]
    public sealed class NewNode
    {
        public NewNode(string nodeId, string role)
        {
            NodeId = nodeId;
            Role = role;
            Endpoints = new Dictionary<string, string>();
            Metadata = new Dictionary<string, string>();
        }

        [DataMember(Name = "nodeId")] public string NodeId { get; set; }
        [DataMember(Name = "role")] public string Role { get; set; }
        [DataMember(Name = "version", EmitDefaultValue = false)] public string Version { get; set; }
        [DataMember(Name = "host", EmitDefaultValue = false)] public string Host { get; set; }
        [DataMember(Name = "endpoints")] public Dictionary<string, string> Endpoints { get; set; }
        [DataMember(Name = "metadata")] public Dictionary<string, string> Metadata { get; set; }
    }

    /// <summary>A received message; the envelope fields are set when it is an envelope.</summary>
    public sealed class Message
    {
        public string Subject { get; internal set; }
        /// <summary>The raw payload.</summary>
        public byte[] Data { get; internal set; }
        public bool IsEnvelope { get; internal set; }
        public string EventId { get; internal set; }
        public string EventType { get; internal set; }
        public string Source { get; internal set; }
        public string ContentType { get; internal set; }
        /// <summary>Nanoseconds since the Unix epoch.</summary>
        public long TimestampNs { get; internal set; }
        /// <summary>The envelope's payload (null when not an envelope).</summary>
        public byte[] Payload { get; internal set; }

        /// <summary>The payload as UTF-8 text (JSON events).</summary>
        public string PayloadText
        {
            get { return Payload == null ? null : System.Text.Encoding.UTF8.GetString(Payload); }
        }
    }

    /// <summary>Arguments of <see cref="Subscription.Received"/>.</summary>
    public sealed class MessageEventArgs : EventArgs
    {
        public MessageEventArgs(Message message) { Message = message; }
        public Message Message { get; private set; }
    }

    /// <summary>Arguments of <see cref="Subscription.HandlerFailed"/>: a handler threw.</summary>
    public sealed class HandlerErrorEventArgs : EventArgs
    {
        public HandlerErrorEventArgs(Message message, Exception error) { Message = message; Error = error; }
        public Message Message { get; private set; }
        public Exception Error { get; private set; }
    }
}
