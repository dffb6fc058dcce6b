//! Room history in Redis (issue 13): one script per publish that assigns the offset, appends
//! to the room's stream and publishes, and the read a recovery makes.
//!
//! Keys of room `R` (`P` is the cluster prefix; the room is a hash tag so the three share a
//! slot): `P:history:{R}:epoch` (8 bytes, the epoch), `P:history:{R}:offset` (the last
//! offset, an integer) and `P:history:{R}:stream` (a stream whose entry ids are `0-<offset>`,
//! fields `e` — the stamped envelope, exactly as published — and `t`, Redis's clock in ms).
//!
//! [`SCRIPT`] runs per publish into a room with history, atomically:
//! 1. `SET epoch <candidate> NX`: the candidate (fresh per publish, drawn by the node) becomes
//!    the epoch only if the room has none — on its first publish, after Redis lost its data
//!    (a restart without persistence), or after the room's keys expired (idle longer than
//!    `max_age`). A new epoch clears the offset and the stream. An epoch whose offset key is
//!    gone (evicted on its own) is replaced too: continuity is lost, so the epoch changes.
//! 2. `INCR offset`.
//! 3. Writes epoch and offset into the envelope at their fixed positions (bytes 13..29, see
//!    `envelope.rs`; the node already set the position flag).
//! 4. `XADD stream MAXLEN ~ max_messages 0-<offset> e <envelope> t <publisher's clock, ms>`.
//! 5. `PEXPIRE` the three keys to `max_age`.
//! 6. `PUBLISH` the envelope on the room's channel.
//!
//! Since Redis runs scripts one at a time, offset order is publish order for every
//! subscriber, whichever node published.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::envelope;
use super::link::Shared;
use crate::cluster_link::{HistoryEntry, HistoryRange};
use crate::error::StreamError;
use crate::sync::{Ordering, lock};

/// The publish script (see the module docs). `KEYS`: epoch, offset, stream. `ARGV`: channel,
/// envelope, candidate epoch (8 bytes), `max_messages`, `max_age` in ms, the publishing node's
/// clock in ms since the Unix epoch (for the age bound; Redis's `TIME` inside the script cost
/// ~4 µs of Redis CPU per publish, ~15% of the script, measured with `INFO commandstats`).
pub(crate) const SCRIPT: &str = r#"
local fresh = redis.call('SET', KEYS[1], ARGV[3], 'NX')
if fresh then
  redis.call('DEL', KEYS[2], KEYS[3])
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('DEL', KEYS[3])
end
local epoch = redis.call('GET', KEYS[1])
local offset = redis.call('INCR', KEYS[2])
local bytes = ''
local n = offset
for _ = 1, 8 do
  bytes = string.char(n % 256) .. bytes
  n = math.floor(n / 256)
end
local env = string.sub(ARGV[2], 1, 13) .. epoch .. bytes .. string.sub(ARGV[2], 30)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '0-' .. offset, 'e', env, 't', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('PUBLISH', ARGV[1], env)
return offset
"#;

/// Loads [`SCRIPT`] (`SCRIPT LOAD`); its SHA1 for `EVALSHA`.
pub(crate) async fn load(shared: &Shared, conn: &mut MultiplexedConnection) -> Option<String> {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(SCRIPT);
    let load = cmd.query_async::<String>(conn);
    match tokio::time::timeout(shared.config.command_timeout, load).await {
        Ok(Ok(sha)) => Some(sha),
        _ => None,
    }
}

/// Adds the script's `EVALSHA` for one envelope of `room` to `pipe`.
pub(crate) fn push_publish(
    pipe: &mut redis::Pipeline,
    shared: &Shared,
    sha: &str,
    channel: &str,
    room: &str,
    env: &[u8],
) {
    let keys = shared.history_keys(room);
    let ttl_ms = shared
        .history
        .age_limit()
        .as_millis()
        .clamp(1, i64::MAX as u128) as u64;
    pipe.cmd("EVALSHA")
        .arg(sha)
        .arg(3)
        .arg(&keys[..])
        .arg(channel)
        .arg(env)
        .arg(&crate::history::fresh_epoch().to_be_bytes()[..])
        .arg(shared.history.message_limit())
        .arg(ttl_ms)
        .arg(unix_ms());
}

/// This node's clock, ms since the Unix epoch (ages compare two nodes' clocks: skew between
/// them shifts the age bound by as much).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits (up to the command timeout) until the subscriber has applied every subscription
/// change requested so far (the caller's hold among them).
async fn subscribed(shared: &Shared) -> bool {
    // ORDERING: progress markers (see the subscriber).
    let requested = shared.subs_requested.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + shared.config.command_timeout;
    loop {
        // Registered before the check, so a change applied in between still wakes us.
        let done = shared.subs_done.notified();
        if Shared::flag(&shared.subscriber_up)
            && shared.subs_applied.load(Ordering::Relaxed) >= requested
        {
            return true;
        }
        // Also wakes every few ms, as `subscriber_up` changes without a notification.
        let wait = deadline.min(tokio::time::Instant::now() + Duration::from_millis(5));
        if tokio::time::timeout_at(wait, done).await.is_err()
            && tokio::time::Instant::now() >= deadline
        {
            return false;
        }
    }
}

type RangeReply = (Option<Vec<u8>>, Option<u64>, Vec<(String, Vec<Vec<u8>>)>);

/// Reads `room`'s epoch, last offset and the entries after `after` (at most `limit + 1`) in
/// one transaction (`MULTI`: `GET`, `GET`, `XRANGE`), once this node listens to the room.
pub(crate) async fn range(
    shared: &Shared,
    room: &str,
    after: u64,
    limit: usize,
) -> Result<HistoryRange, StreamError> {
    let unavailable = || StreamError::SendFailed(room.to_string());
    if !subscribed(shared).await {
        return Err(unavailable());
    }
    let mut conn = lock(&shared.reader).clone().ok_or_else(unavailable)?;
    let [epoch_key, offset_key, stream_key] = shared.history_keys(room);
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("GET")
        .arg(&epoch_key)
        .cmd("GET")
        .arg(&offset_key)
        .cmd("XRANGE")
        .arg(&stream_key)
        .arg(format!("0-{}", after.saturating_add(1)))
        .arg("+")
        .arg("COUNT")
        .arg(limit.saturating_add(1));
    let read = pipe.query_async::<RangeReply>(&mut conn);
    let (epoch, top, raw) = match tokio::time::timeout(shared.config.command_timeout, read).await {
        Ok(Ok(reply)) => reply,
        _ => return Err(unavailable()),
    };
    let epoch = epoch
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes);
    let now_ms = unix_ms();
    let mut entries = Vec::with_capacity(raw.len());
    for (id, fields) in raw {
        let Some(offset) = id.strip_prefix("0-").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let mut env = None;
        let mut at = now_ms;
        for pair in fields.chunks_exact(2) {
            match pair[0].as_slice() {
                b"e" => env = Some(&pair[1]),
                b"t" => {
                    at = std::str::from_utf8(&pair[1])
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(now_ms)
                }
                _ => {}
            }
        }
        let Some(decoded) = env.and_then(|e| envelope::decode(e).ok()) else {
            super::link::Counters::bump(&shared.counters.bad_messages, 1);
            continue;
        };
        let Ok(msg) = envelope::message(&decoded) else {
            super::link::Counters::bump(&shared.counters.bad_messages, 1);
            continue;
        };
        let except = decoded.except.map(str::to_string);
        let age = Duration::from_millis(now_ms.saturating_sub(at));
        entries.push(HistoryEntry::new(offset, age, msg, except));
    }
    Ok(HistoryRange::new(epoch, top.unwrap_or(0), entries))
}
