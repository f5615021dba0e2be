// Exceptions of the Langtian C# binding: one per status code of liblangtian_cs, each with the
// stable Code shared with the Node SDK (ERR_CONNECT, ERR_PUBLISH, ...).
using System;

namespace Langtian
{
    /// <summary>Base of every error the binding throws; <see cref="Code"/> is stable.</summary>
    public class LangtianException : Exception
    {
        public LangtianException(string code, int status, string message) : base(message)
        {
            Code = code;
            Status = status;
        }

        /// <summary>ERR_ARGUMENT, ERR_CONNECT, ERR_PUBLISH, ERR_ENVELOPE, ERR_DISCOVERY, ERR_TIMEOUT, ERR_REQUEST or ERR_INTERNAL.</summary>
        public string Code { get; private set; }

        /// <summary>The native status code.</summary>
        public int Status { get; private set; }

        internal static LangtianException FromStatus(int status, string message)
        {
            switch (status)
            {
                case 1: return new LangtianArgumentException(message);
                case 2: return new ConnectException(message);
                case 3: return new PublishException(message);
                case 4: return new EnvelopeException(message);
                case 5: return new DiscoveryException(message);
                case 6: return new LangtianTimeoutException(message);
                case 7: return new RequestException(message);
                case 8: return new NoSnapshotException(message);
                default: return new LangtianException("ERR_INTERNAL", status, message);
            }
        }
    }

    /// <summary>A bad argument: null, not UTF-8, malformed options, a QoS other than 0, 1, 2.</summary>
    public sealed class LangtianArgumentException : LangtianException
    {
        public LangtianArgumentException(string message) : base("ERR_ARGUMENT", 1, message) { }
    }

    /// <summary>No NATS server answered, or the connection failed.</summary>
    public sealed class ConnectException : LangtianException
    {
        public ConnectException(string message) : base("ERR_CONNECT", 2, message) { }
    }

    /// <summary>JetStream did not store the event (no stream for the subject, no JetStream).</summary>
    public sealed class PublishException : LangtianException
    {
        public PublishException(string message) : base("ERR_PUBLISH", 3, message) { }
    }

    /// <summary>The envelope could not be built (empty event type or source, ...).</summary>
    public sealed class EnvelopeException : LangtianException
    {
        public EnvelopeException(string message) : base("ERR_ENVELOPE", 4, message) { }
    }

    /// <summary>KV discovery failed (bucket missing, bad node id, KV error).</summary>
    public sealed class DiscoveryException : LangtianException
    {
        public DiscoveryException(string message) : base("ERR_DISCOVERY", 5, message) { }
    }

    /// <summary>No answer in time.</summary>
    public sealed class LangtianTimeoutException : LangtianException
    {
        public LangtianTimeoutException(string message) : base("ERR_TIMEOUT", 6, message) { }
    }

    /// <summary>A request had no responder or failed.</summary>
    public sealed class RequestException : LangtianException
    {
        public RequestException(string message) : base("ERR_REQUEST", 7, message) { }
    }

    /// <summary>A live group has no snapshot to start from: no aggregator has seen the group.</summary>
    public sealed class NoSnapshotException : LangtianException
    {
        public NoSnapshotException(string message) : base("ERR_LIVE_NO_SNAPSHOT", 8, message) { }
    }
}
