// Marshalling helpers over the generated NativeMethods (C# 7.2: no local functions, no nint).
using System;
using System.IO;
using System.Runtime.Serialization.Json;
using System.Text;
using Langtian.Native;

namespace Langtian
{
    internal static unsafe class Interop
    {
        /// <summary>A NUL-terminated UTF-8 copy of <paramref name="s"/> (null stays null).</summary>
        internal static byte[] Utf8(string s)
        {
            if (s == null) return null;
            var bytes = new byte[Encoding.UTF8.GetByteCount(s) + 1];
            Encoding.UTF8.GetBytes(s, 0, s.Length, bytes, 0);
            return bytes;
        }

        /// <summary>Throws the exception for a non-zero status, with the native last-error text.</summary>
        internal static void Check(int status)
        {
            if (status == 0) return;
            throw LangtianException.FromStatus(status, LastError());
        }

        internal static string LastError()
        {
            var needed = (int)NativeMethods.lt_last_error(null, UIntPtr.Zero);
            var buf = new byte[needed + 1];
            fixed (byte* p = buf)
            {
                NativeMethods.lt_last_error(p, (UIntPtr)buf.Length);
            }
            return Encoding.UTF8.GetString(buf, 0, needed);
        }

        /// <summary>Copies a library buffer into managed memory and frees it.</summary>
        internal static byte[] Take(LtBuffer b)
        {
            try
            {
                var len = (int)b.len;
                var bytes = new byte[len];
                if (len > 0) System.Runtime.InteropServices.Marshal.Copy((IntPtr)b.ptr, bytes, 0, len);
                return bytes;
            }
            finally
            {
                NativeMethods.lt_buffer_free(b);
            }
        }

        internal static string Text(LtStr s)
        {
            return s.len == UIntPtr.Zero ? string.Empty : Encoding.UTF8.GetString(s.ptr, (int)s.len);
        }

        internal static byte[] Bytes(LtStr s)
        {
            var bytes = new byte[(int)s.len];
            if (bytes.Length > 0) System.Runtime.InteropServices.Marshal.Copy((IntPtr)s.ptr, bytes, 0, bytes.Length);
            return bytes;
        }

        static readonly DataContractJsonSerializerSettings JsonSettings = new DataContractJsonSerializerSettings
        {
            UseSimpleDictionaryFormat = true,
        };

        internal static string ToJson<T>(T value)
        {
            var ser = new DataContractJsonSerializer(typeof(T), JsonSettings);
            using (var ms = new MemoryStream())
            {
                ser.WriteObject(ms, value);
                return Encoding.UTF8.GetString(ms.ToArray());
            }
        }

        internal static T FromJson<T>(byte[] json)
        {
            var ser = new DataContractJsonSerializer(typeof(T), JsonSettings);
            using (var ms = new MemoryStream(json))
            {
                return (T)ser.ReadObject(ms);
            }
        }
    }
}
