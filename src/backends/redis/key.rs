//! How keys are named in Redis: the [`RedisKey`] encoding of each key type and
//! the `{prefix}:k:{key}` / `{prefix}:g` names built from it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::backends::BorrowedKey;

/// How a key is written into a Redis key name.
///
/// The encoding must be one-to-one for the type: two different keys must never
/// write the same bytes. The provided implementations are: strings (`str`,
/// `String`, `Box<str>`, `Arc<str>`) and byte strings (`[u8]`, `Vec<u8>`) as their
/// bytes; integers in decimal; `bool` as `true`/`false`; IP and socket addresses
/// in their canonical text (`192.0.2.1`, `2001:db8::1`, `[::1]:80`). Keys of
/// different types under one prefix may meet (`"7"` and `7u32`): give each limit
/// its own prefix.
///
/// ```
/// use tower_freqlimit::backends::redis::RedisKey;
///
/// /// A tenant and a user: `tenant/user`, and `/` cannot occur in a tenant id.
/// struct UserKey { tenant: u32, user: String }
///
/// impl RedisKey for UserKey {
///     fn write_redis_key(&self, out: &mut Vec<u8>) {
///         self.tenant.write_redis_key(out);
///         out.push(b'/');
///         self.user.write_redis_key(out);
///     }
/// }
///
/// let mut out = Vec::new();
/// UserKey { tenant: 7, user: "ann".into() }.write_redis_key(&mut out);
/// assert_eq!(out, b"7/ann");
/// ```
pub trait RedisKey {
    /// Appends this key's bytes to `out`.
    fn write_redis_key(&self, out: &mut Vec<u8>);
}

impl RedisKey for str {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl RedisKey for [u8] {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

macro_rules! deref_keys {
    ($($t:ty => $target:ty),* $(,)?) => {$(
        impl RedisKey for $t {
            fn write_redis_key(&self, out: &mut Vec<u8>) {
                <$target as RedisKey>::write_redis_key(self, out);
            }
        }
    )*};
}

deref_keys!(String => str, Box<str> => str, Arc<str> => str, Vec<u8> => [u8]);

macro_rules! display_keys {
    ($($t:ty),* $(,)?) => {$(
        impl RedisKey for $t {
            fn write_redis_key(&self, out: &mut Vec<u8>) {
                use std::io::Write as _;
                // Writing into a Vec cannot fail.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

display_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool, IpAddr, Ipv4Addr,
    Ipv6Addr, SocketAddr,
);

impl<T: RedisKey + ?Sized> RedisKey for &T {
    fn write_redis_key(&self, out: &mut Vec<u8>) {
        (**self).write_redis_key(out);
    }
}

/// `{prefix}:k:{key}`, or `{prefix}:g` for the global bucket (`None`).
pub(super) fn encode_key<K: RedisKey + ?Sized>(prefix: &[u8], key: Option<&K>) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 40);
    out.extend_from_slice(prefix);
    match key {
        None => out.extend_from_slice(b":g"),
        Some(key) => {
            out.extend_from_slice(b":k:");
            key.write_redis_key(&mut out);
        }
    }
    out
}

/// [`encode_key`] for a borrowed form of the key: the bytes are the owned
/// key's, so a lookup by `&str` and by `&String` meet on one Redis key.
pub(super) fn encode_borrowed<K, Q>(prefix: &[u8], key: Option<&Q>) -> Vec<u8>
where
    K: RedisKey,
    Q: BorrowedKey<K> + ?Sized,
{
    encode_key(prefix, key.map(BorrowedKey::to_key).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encoding_keeps_the_global_bucket_apart() {
        let p = b"freqlimit";
        assert_eq!(encode_key::<str>(p, None), b"freqlimit:g");
        assert_eq!(encode_key(p, Some("None")), b"freqlimit:k:None");
        assert_eq!(encode_key(p, Some("")), b"freqlimit:k:");
        assert_eq!(encode_key(p, Some("g")), b"freqlimit:k:g");
        assert_eq!(encode_key(p, Some(&42u64)), b"freqlimit:k:42");
        assert_eq!(encode_key(p, Some(&-1i8)), b"freqlimit:k:-1");
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(encode_key(p, Some(&ip)), b"freqlimit:k:2001:db8::1");
        assert_eq!(
            encode_key(p, Some(&b"\x00\xff"[..])),
            b"freqlimit:k:\x00\xff"
        );
    }
}
