//! The background tasks of a Redis cluster node: publisher, subscriber and presence.
//!
//! - The **publisher** owns a multiplexed connection. It takes what the hub queued (bounded:
//!   a full backlog fails the send at once), builds each envelope with its per-channel
//!   sequence number, and sends up to `max_batch` of them as one pipeline (one round trip;
//!   Redis runs them in order, so per-channel order is the order of the queue). While Redis
//!   is unreachable it discards and counts everything queued (fail fast), reconnecting with
//!   exponential backoff.
//! - The **subscriber** owns a pub/sub connection subscribed to this node's channel, the
//!   presence channel, the all-nodes channel, and each room with local members; it batches
//!   subscription changes, delivers what arrives to local sockets, checks sequence numbers,
//!   and rebuilds its connection (resubscribing everything) when it breaks or the probe says
//!   it stalled.
//! - The **presence** task announces this node (deltas, full state every heartbeat, hello
//!   after reconnecting), forgets nodes whose TTL ran out, and probes the subscription: every
//!   `probe_interval` it publishes a nonce on this node's own channel and, if the publish went
//!   through but the nonce has not come back within `probe_timeout`, rebuilds the subscriber.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc as StrArc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::envelope::{self, DecodeError, FLAG_EXCEPT_LOCAL, FLAG_POSITION, Kind, Outgoing};
use super::history;
use super::link::{Counters, GOODBYE, Outbound, Shared};
use super::presence::{self, Announcement, OP_FULL, OP_GOODBYE, OP_HELLO, State};
use crate::history::StreamPosition;
use crate::hub::StreamHub;
use crate::shared_message::SharedMessage;
use crate::sync::{Ordering, lock};

/// Most sequence counters the publisher keeps before starting them all over at 1 (receivers
/// treat seq 1 as a fresh start, not a gap).
const MAX_SEQ_CHANNELS: usize = 100_000;
/// Most channels per SUBSCRIBE / UNSUBSCRIBE command.
const SUBSCRIBE_CHUNK: usize = 1_000;

async fn connect(client: &Client, shared: &Shared) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(shared.config.command_timeout))
        .set_response_timeout(Some(shared.config.command_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

fn backoff_next(current: Duration, shared: &Shared) -> Duration {
    (current * 2).min(shared.config.reconnect_max)
}

/// Per-channel sequence numbers of what this node publishes.
#[derive(Default)]
struct Sequences {
    next: HashMap<String, u64>,
}

impl Sequences {
    fn next(&mut self, channel: &str) -> u64 {
        if let Some(n) = self.next.get_mut(channel) {
            *n += 1;
            return *n;
        }
        if self.next.len() >= MAX_SEQ_CHANNELS {
            self.next.clear();
        }
        self.next.insert(channel.to_string(), 1);
        1
    }
}

fn channel_of(shared: &Shared, item: &Outbound) -> String {
    match item.kind {
        Kind::Room | Kind::Rooms | Kind::Query => shared.room_channel(&item.target),
        Kind::Direct | Kind::User | Kind::Reply => {
            shared.node_channel(item.node.as_deref().unwrap_or(""))
        }
        Kind::Probe => shared.node_channel(&shared.node),
        Kind::All => shared.all_channel(),
        Kind::Presence => shared.presence_channel(),
    }
}

fn is_data(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Room | Kind::Rooms | Kind::Direct | Kind::User | Kind::All
    )
}

/// Counts items that could not be published: data items as failed publishes; presence and
/// probes are re-sent after reconnecting, so they are only dropped. A discarded data item
/// still takes its sequence number, so receivers see the loss as a gap too.
fn fail(shared: &Shared, hub: &StreamHub, items: &[Outbound]) {
    let data = items.iter().filter(|i| is_data(i.kind)).count() as u64;
    Counters::bump(&shared.counters.publish_failed, data);
    for item in items {
        unlogged(shared, hub, item);
    }
}

/// A message of a room with history that did not get through Redis still reaches this
/// node's members: live only, without a position, not in the log (and counted).
fn unlogged(shared: &Shared, hub: &StreamHub, item: &Outbound) {
    if item.flags & FLAG_POSITION == 0 {
        return;
    }
    let msg = if item.flags & envelope::FLAG_BINARY != 0 {
        crate::message::SocketMessage::Binary(item.payload.clone())
    } else {
        match crate::message::Utf8Bytes::try_from_bytes(item.payload.clone()) {
            Ok(text) => crate::message::SocketMessage::Text(text),
            Err(_) => return,
        }
    };
    Counters::bump(&shared.counters.history_unlogged, 1);
    let msg = SharedMessage::new(msg);
    hub.deliver_room(&item.target, &msg, item.except.as_deref());
}

/// Discards items while Redis is unreachable (see [`fail`]), consuming their sequence
/// numbers.
fn discard(shared: &Shared, hub: &StreamHub, seqs: &mut Sequences, item: Outbound) {
    if is_data(item.kind) {
        seqs.next(&channel_of(shared, &item));
    }
    fail(shared, hub, &[item]);
}

/// The publisher task.
pub(crate) async fn publisher(
    client: Client,
    shared: StrArc<Shared>,
    hub: StreamHub,
    mut data: mpsc::Receiver<Outbound>,
    mut control: mpsc::UnboundedReceiver<Outbound>,
) {
    let mut seqs = Sequences::default();
    let mut backoff = shared.config.reconnect_min;
    let mut batch: Vec<Outbound> = Vec::with_capacity(shared.config.max_batch);
    loop {
        let attempt =
            tokio::time::timeout(shared.config.command_timeout, connect(&client, &shared));
        let mut conn = match attempt.await {
            Ok(Ok(conn)) => conn,
            other => {
                if let Ok(Err(e)) = other {
                    debug!(node = %shared.node, error = %e, "cluster publisher: connect failed");
                }
                // Fail fast while down: whatever arrives during the backoff is discarded.
                let sleep = tokio::time::sleep(backoff);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        item = data.recv() => match item {
                            Some(item) => discard(&shared, &hub, &mut seqs, item),
                            None => return,
                        },
                        item = control.recv() => match item {
                            Some(item) => discard(&shared, &hub, &mut seqs, item),
                            None => return,
                        },
                    }
                }
                backoff = backoff_next(backoff, &shared);
                continue;
            }
        };
        backoff = shared.config.reconnect_min;
        let mut sha = None;
        if shared.history.is_enabled() {
            sha = history::load(&shared, &mut conn).await;
            if sha.is_none() {
                warn!(node = %shared.node, "cluster publisher: SCRIPT LOAD failed; history publishes will fail");
            }
            *lock(&shared.reader) = Some(conn.clone());
        }
        Counters::bump(&shared.counters.publisher_connects, 1);
        Shared::set_flag(&shared.publisher_up, true);
        // A (re)connected publisher re-announces this node.
        shared.resync.notify_one();
        loop {
            batch.clear();
            tokio::select! {
                biased;
                item = control.recv() => match item {
                    Some(item) => batch.push(item),
                    None => return,
                },
                item = data.recv() => match item {
                    Some(item) => batch.push(item),
                    None => return,
                },
            }
            while batch.len() < shared.config.max_batch {
                match control.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            while batch.len() < shared.config.max_batch {
                match data.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            if shared.is_detached() {
                // After the goodbye nothing may re-announce this node.
                batch.retain(|i| i.kind != Kind::Presence || i.probe == GOODBYE);
            }
            let has_history = batch.iter().any(|i| i.flags & FLAG_POSITION != 0);
            let mut failed_in_batch = 0u64;
            let mut pipe = redis::pipe();
            // History envelopes (index in the batch, channel, bytes), kept for a re-send
            // after NOSCRIPT.
            let mut scripted: Vec<(usize, String, bytes::Bytes)> = Vec::new();
            for (index, item) in batch.iter().enumerate() {
                let channel = channel_of(&shared, item);
                let probe_nonce;
                let payload: &[u8] = if item.kind == Kind::Probe {
                    probe_nonce = item.probe.to_be_bytes();
                    &probe_nonce
                } else {
                    &item.payload
                };
                let env = Outgoing {
                    kind: item.kind,
                    flags: item.flags,
                    seq: seqs.next(&channel),
                    origin: &shared.node,
                    target: &item.target,
                    except: item.except.as_deref(),
                    payload,
                }
                .encode();
                if item.flags & FLAG_POSITION != 0 {
                    let mut env = bytes::BytesMut::from(&env[..]);
                    env[4] |= FLAG_POSITION;
                    let env = env.freeze();
                    history::push_publish(
                        &mut pipe,
                        &shared,
                        sha.as_deref().unwrap_or(""),
                        &channel,
                        &item.target,
                        &env,
                    );
                    scripted.push((index, channel, env));
                } else {
                    pipe.cmd("PUBLISH").arg(channel).arg(&env[..]);
                    if !has_history {
                        pipe.ignore();
                    }
                }
            }
            let sent = if has_history {
                // Per-command results: a NOSCRIPT (Redis lost its script cache without
                // dropping the connection) fails only the scripted publishes, which are sent
                // again after SCRIPT LOAD (they were not run, so nothing is duplicated).
                pipe.ignore_errors();
                let results = tokio::time::timeout(
                    shared.config.command_timeout,
                    pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut conn),
                )
                .await;
                match results {
                    Ok(Ok(results)) => {
                        let noscript = |r: &redis::RedisResult<redis::Value>| {
                            r.as_ref().is_err_and(|e| {
                                e.kind()
                                    == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                            })
                        };
                        let retry: Vec<_> = scripted
                            .iter()
                            .filter(|(index, _, _)| results.get(*index).is_some_and(noscript))
                            .collect();
                        let mut failed = results.iter().filter(|r| r.is_err()).count() as u64;
                        for (index, _, _) in &scripted {
                            let result = results.get(*index);
                            if result.is_none_or(|r| r.is_err() && !noscript(r)) {
                                unlogged(&shared, &hub, &batch[*index]);
                            }
                        }
                        if !retry.is_empty() {
                            sha = history::load(&shared, &mut conn).await;
                            let mut again = redis::pipe();
                            for (index, channel, env) in &retry {
                                history::push_publish(
                                    &mut again,
                                    &shared,
                                    sha.as_deref().unwrap_or(""),
                                    channel,
                                    &batch[*index].target,
                                    env,
                                );
                            }
                            failed -= retry.len() as u64;
                            let resent = tokio::time::timeout(
                                shared.config.command_timeout,
                                again.query_async::<()>(&mut conn),
                            )
                            .await;
                            if !matches!(resent, Ok(Ok(()))) {
                                failed += retry.len() as u64;
                                for (index, _, _) in &retry {
                                    unlogged(&shared, &hub, &batch[*index]);
                                }
                            }
                        }
                        Counters::bump(&shared.counters.publish_failed, failed);
                        failed_in_batch = failed;
                        Ok(Ok(()))
                    }
                    Ok(Err(e)) => Ok(Err(e)),
                    Err(e) => Err(e),
                }
            } else {
                tokio::time::timeout(
                    shared.config.command_timeout,
                    pipe.query_async::<()>(&mut conn),
                )
                .await
            };
            match sent {
                Ok(Ok(())) => {
                    let data_n = batch.iter().filter(|i| is_data(i.kind)).count() as u64;
                    Counters::bump(
                        &shared.counters.published,
                        data_n.saturating_sub(failed_in_batch),
                    );
                    if batch
                        .iter()
                        .any(|i| i.kind == Kind::Presence && i.probe == GOODBYE)
                    {
                        Shared::set_flag(&shared.goodbye_sent, true);
                    }
                    if let Some(probe) = batch.iter().rev().find(|i| i.kind == Kind::Probe) {
                        // ORDERING: read by the presence task only to compare nonces.
                        shared
                            .probe_published
                            .fetch_max(probe.probe, Ordering::Relaxed);
                    }
                }
                other => {
                    match other {
                        Ok(Err(e)) => {
                            warn!(node = %shared.node, error = %e, "cluster publish failed")
                        }
                        _ => warn!(node = %shared.node, "cluster publish timed out"),
                    }
                    fail(&shared, &hub, &batch);
                    Shared::set_flag(&shared.publisher_up, false);
                    *lock(&shared.reader) = None;
                    break;
                }
            }
        }
    }
}

/// Receive-side sequence tracking: the last seq seen per (channel, origin); and the
/// multi-room broadcasts delivered lately, per origin.
#[derive(Default)]
struct Received {
    last: HashMap<String, HashMap<String, u64>>,
    rooms_broadcasts: HashMap<String, RecentIds>,
}

/// The last [`RecentIds::KEEP`] ids delivered (the copies of one broadcast are published
/// back to back, so a later copy comes well within that many of the origin's broadcasts).
#[derive(Default)]
struct RecentIds {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    const KEEP: usize = 4096;

    /// Records `id`; false if it was already there.
    fn first(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

impl Received {
    /// Whether this is the first copy of `origin`'s multi-room broadcast `id` seen here.
    fn first_copy(&mut self, shared: &Shared, origin: &str, id: u64) -> bool {
        if let Some(recent) = self.rooms_broadcasts.get_mut(origin) {
            return recent.first(id);
        }
        if self.rooms_broadcasts.len() >= 64 {
            // Forget the nodes that are gone.
            let replica = shared.replica();
            self.rooms_broadcasts
                .retain(|node, _| replica.has_node(node));
        }
        let mut recent = RecentIds::default();
        recent.first(id);
        self.rooms_broadcasts.insert(origin.to_string(), recent);
        true
    }

    /// Records `seq` and returns how many messages were missed before it.
    fn check(&mut self, channel: &str, origin: &str, seq: u64) -> u64 {
        let per_origin = match self.last.get_mut(channel) {
            Some(m) => m,
            None => self.last.entry(channel.to_string()).or_default(),
        };
        match per_origin.get_mut(origin) {
            Some(last) => {
                let missed = if seq > *last + 1 { seq - *last - 1 } else { 0 };
                *last = seq;
                missed
            }
            None => {
                per_origin.insert(origin.to_string(), seq);
                0
            }
        }
    }

    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.last.retain(|ch, _| keep(ch));
    }

    fn forget_channel(&mut self, channel: &str) {
        self.last.remove(channel);
    }
}

/// A member query's payload: its id.
pub(crate) fn query_item(room: &str, id: u64) -> Outbound {
    Outbound {
        kind: Kind::Query,
        target: room.into(),
        node: None,
        except: None,
        flags: envelope::FLAG_BINARY,
        payload: bytes::Bytes::copy_from_slice(&id.to_be_bytes()),
        probe: 0,
    }
}

/// A reply's payload: `u64 id, u32 n, n × (u16 len, socket id)`.
fn reply_item(to: &str, room: &str, id: u64, members: &[String]) -> Outbound {
    let mut b = bytes::BytesMut::new();
    b.extend_from_slice(&id.to_be_bytes());
    let members: Vec<&String> = members
        .iter()
        .filter(|m| m.len() <= u16::MAX as usize)
        .collect();
    b.extend_from_slice(&(members.len() as u32).to_be_bytes());
    for m in members {
        b.extend_from_slice(&(m.len() as u16).to_be_bytes());
        b.extend_from_slice(m.as_bytes());
    }
    Outbound {
        kind: Kind::Reply,
        target: room.into(),
        node: Some(to.into()),
        except: None,
        flags: envelope::FLAG_BINARY,
        payload: b.freeze(),
        probe: 0,
    }
}

fn decode_reply(payload: &[u8]) -> Result<(u64, Vec<String>), DecodeError> {
    let mut r = envelope::Reader::new(payload);
    let id = r.u64()?;
    let n = r.u32()? as usize;
    if n > payload.len() / 2 {
        return Err(DecodeError::Malformed);
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u16()? as usize;
        out.push(r.str(len)?.to_string());
    }
    if !r.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok((id, out))
}

/// Handles one message from a subscribed channel.
fn handle(
    shared: &Shared,
    hub: &StreamHub,
    control: &mpsc::UnboundedSender<Outbound>,
    received: &mut Received,
    channel: &str,
    bytes: &[u8],
) {
    let bad = || Counters::bump(&shared.counters.bad_messages, 1);
    let env = match envelope::decode(bytes) {
        Ok(env) => env,
        Err(DecodeError::Foreign | DecodeError::Malformed) => return bad(),
    };
    let own = env.origin == &*shared.node;
    match env.kind {
        Kind::Probe => {
            if own && env.payload.len() == 8 {
                let mut nonce = [0u8; 8];
                nonce.copy_from_slice(env.payload);
                // ORDERING: compared by the presence task only.
                shared
                    .probe_seen
                    .fetch_max(u64::from_be_bytes(nonce), Ordering::Relaxed);
            }
        }
        Kind::Presence => {
            if own {
                return;
            }
            let Ok(announcement) = presence::decode(env.payload) else {
                return bad();
            };
            let hello = matches!(announcement, Announcement::Hello);
            let new = {
                let mut replica = lock(&shared.replica);
                let new = replica.apply(env.origin, announcement, Instant::now());
                shared.settle_locked(&mut replica, hub);
                new
            };
            // Answer with a full state only (never a hello: that would echo forever).
            if hello || new {
                shared.announce.notify_one();
            }
        }
        Kind::Query | Kind::Reply => {
            if own {
                return;
            }
            if env.kind == Kind::Query && channel != shared.room_channel(env.target) {
                return bad();
            }
            let missed = received.check(channel, env.origin, env.seq);
            if missed > 0 {
                Counters::bump(&shared.counters.gaps, missed);
            }
            if env.kind == Kind::Query {
                let Ok(id) = <[u8; 8]>::try_from(env.payload) else {
                    return bad();
                };
                let members = hub.local_member_ids(env.target);
                let reply = reply_item(env.origin, env.target, u64::from_be_bytes(id), &members);
                let _ = control.send(reply);
            } else {
                let Ok((id, members)) = decode_reply(env.payload) else {
                    return bad();
                };
                if let Some(tx) = lock(&shared.queries).get(&id) {
                    let _ = tx.send((env.origin.to_string(), members));
                }
            }
        }
        Kind::Rooms => {
            if own {
                return;
            }
            if channel != shared.room_channel(env.target) {
                return bad();
            }
            let Ok(broadcast) = envelope::rooms_broadcast(&env) else {
                return bad();
            };
            let missed = received.check(channel, env.origin, env.seq);
            if missed > 0 {
                Counters::bump(&shared.counters.gaps, missed);
            }
            if !received.first_copy(shared, env.origin, broadcast.id) {
                return;
            }
            Counters::bump(&shared.counters.received, 1);
            let except = env.except.filter(|_| env.flags & FLAG_EXCEPT_LOCAL == 0);
            let msg = SharedMessage::new(broadcast.msg);
            hub.deliver_rooms(&broadcast.rooms, &msg, except);
        }
        Kind::Room if env.position.is_some() => {
            // A message of a room with history: every node delivers it from here, its
            // publisher's included, in Redis's (offset) order.
            if channel != shared.room_channel(env.target) {
                return bad();
            }
            let Ok(msg) = envelope::message(&env) else {
                return bad();
            };
            if !own {
                Counters::bump(&shared.counters.received, 1);
            }
            let missed = received.check(channel, env.origin, env.seq);
            if missed > 0 {
                Counters::bump(&shared.counters.gaps, missed);
            }
            let (epoch, offset) = env.position.unwrap_or_default();
            // The origin excludes its socket by id; other nodes only if it is not local there.
            let except = env
                .except
                .filter(|_| own || env.flags & FLAG_EXCEPT_LOCAL == 0);
            hub.deliver_history(env.target, StreamPosition::new(epoch, offset), msg, except);
        }
        Kind::Room | Kind::Direct | Kind::User | Kind::All => {
            if own {
                return;
            }
            if env.kind == Kind::Room && channel != shared.room_channel(env.target) {
                return bad();
            }
            let Ok(msg) = envelope::message(&env) else {
                return bad();
            };
            Counters::bump(&shared.counters.received, 1);
            let missed = received.check(channel, env.origin, env.seq);
            if missed > 0 {
                Counters::bump(&shared.counters.gaps, missed);
            }
            match env.kind {
                Kind::Room => {
                    let except = env.except.filter(|_| env.flags & FLAG_EXCEPT_LOCAL == 0);
                    hub.deliver_room(env.target, &SharedMessage::new(msg), except);
                }
                Kind::Direct => {
                    hub.deliver_to(env.target, msg);
                }
                Kind::User => {
                    hub.deliver_user(env.target, &SharedMessage::new(msg));
                }
                _ => {
                    hub.deliver_all(&SharedMessage::new(msg));
                }
            }
        }
    }
}

/// The subscriber task.
pub(crate) async fn subscriber(
    client: Client,
    shared: StrArc<Shared>,
    hub: StreamHub,
    control: mpsc::UnboundedSender<Outbound>,
) {
    let mut backoff = shared.config.reconnect_min;
    let base = [
        shared.node_channel(&shared.node),
        shared.presence_channel(),
        shared.all_channel(),
    ];
    let room_prefix = shared.room_channel("");
    // Kept across reconnects: what was published while this node was not listening shows
    // up as a gap when it listens again.
    let mut received = Received::default();
    loop {
        Shared::set_flag(&shared.subscriber_up, false);
        // ORDERING: a statistic.
        shared.subscribed_rooms.store(0, Ordering::Relaxed);
        let timeout = shared.config.command_timeout;
        let pubsub = match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            other => {
                if let Ok(Err(e)) = other {
                    debug!(node = %shared.node, error = %e, "cluster subscriber: connect failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = backoff_next(backoff, &shared);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        if !matches!(
            tokio::time::timeout(timeout, sink.subscribe(&base[..])).await,
            Ok(Ok(()))
        ) {
            tokio::time::sleep(backoff).await;
            backoff = backoff_next(backoff, &shared);
            continue;
        }
        backoff = shared.config.reconnect_min;
        Counters::bump(&shared.counters.subscriber_connects, 1);
        // What was published while this node was not listening is missing from its rings.
        hub.history_resubscribed();
        let mut actual: HashSet<String> = HashSet::new();
        // Everything is to be (re)subscribed: start from the hub's current rooms.
        let mut full = true;
        Shared::set_flag(&shared.subscriber_up, true);
        shared.resync.notify_one();
        'connection: loop {
            // Reconcile the subscriptions with the hub's rooms.
            // ORDERING: read before taking the dirty set, so `applied` never claims changes
            // made after it (the dirty lock orders the set with the counter).
            let requested = shared.subs_requested.load(Ordering::Relaxed);
            let was_full = full;
            let rooms: Vec<String> = if full {
                lock(&shared.dirty).subscriptions.clear();
                let mut rooms: Vec<String> =
                    hub.local_rooms().into_iter().map(|(r, _)| r).collect();
                // Rooms a recovery holds subscribed without local members.
                rooms.extend(lock(&shared.held).keys().cloned());
                rooms
            } else {
                lock(&shared.dirty).subscriptions.drain().collect()
            };
            full = false;
            let mut add = Vec::new();
            let mut remove = Vec::new();
            for room in rooms {
                let want = hub.local_room_size(&room) > 0 || shared.is_held(&room);
                match (want, actual.contains(&room)) {
                    (true, false) => add.push(room),
                    (false, true) => remove.push(room),
                    _ => {}
                }
            }
            for chunk in add.chunks(SUBSCRIBE_CHUNK) {
                let channels: Vec<String> = chunk.iter().map(|r| shared.room_channel(r)).collect();
                if !matches!(
                    tokio::time::timeout(timeout, sink.subscribe(&channels)).await,
                    Ok(Ok(()))
                ) {
                    break 'connection;
                }
                actual.extend(chunk.iter().cloned());
            }
            for chunk in remove.chunks(SUBSCRIBE_CHUNK) {
                let channels: Vec<String> = chunk.iter().map(|r| shared.room_channel(r)).collect();
                if !matches!(
                    tokio::time::timeout(timeout, sink.unsubscribe(&channels)).await,
                    Ok(Ok(()))
                ) {
                    break 'connection;
                }
                for (room, channel) in chunk.iter().zip(&channels) {
                    actual.remove(room);
                    received.forget_channel(channel);
                }
            }
            if was_full {
                // Rooms left while disconnected are no longer listened to.
                received.retain(|ch| {
                    !ch.starts_with(&room_prefix) || { actual.contains(&ch[room_prefix.len()..]) }
                });
            }
            // ORDERING: statistics / progress markers read by `RedisCluster`.
            shared
                .subscribed_rooms
                .store(actual.len() as u64, Ordering::Relaxed);
            shared.subs_applied.fetch_max(requested, Ordering::Relaxed);
            shared.subs_done.notify_waiters();
            // Serve messages until there is something to reconcile.
            loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => {
                            let channel = msg.get_channel_name();
                            if channel.starts_with(&room_prefix)
                                || base.iter().any(|b| b == channel)
                            {
                                handle(&shared, &hub, &control, &mut received, channel, msg.get_payload_bytes());
                            }
                        }
                        None => {
                            warn!(node = %shared.node, "cluster subscription lost; reconnecting");
                            break 'connection;
                        }
                    },
                    _ = shared.wake_subscriber.notified() => continue 'connection,
                    _ = shared.rebuild_subscriber.notified() => {
                        warn!(node = %shared.node, "cluster subscription stalled; rebuilding");
                        break 'connection;
                    }
                }
            }
        }
        drop(sink);
        drop(stream);
    }
}

fn local_state(hub: &StreamHub, shared: &Shared, ttl_ms: u32) -> State {
    State {
        members: shared.presence.local_members(),
        ttl_ms,
        connections: hub.local_connection_count() as u32,
        users: hub
            .local_users()
            .into_iter()
            .map(|(u, n)| (u, n as u32))
            .collect(),
        rooms: hub
            .local_rooms()
            .into_iter()
            .map(|(r, n)| (r, n as u32))
            .collect(),
    }
}

fn presence_item(payload: bytes::Bytes) -> Outbound {
    Outbound {
        kind: Kind::Presence,
        target: "".into(),
        node: None,
        except: None,
        flags: envelope::FLAG_BINARY,
        payload,
        probe: 0,
    }
}

/// A goodbye announcement.
pub(crate) fn goodbye() -> Outbound {
    let mut item = presence_item(bytes::Bytes::from_static(&[OP_GOODBYE]));
    item.probe = GOODBYE;
    item
}

/// The presence (and probe) task.
pub(crate) async fn presence_task(
    shared: StrArc<Shared>,
    hub: StreamHub,
    control: mpsc::UnboundedSender<Outbound>,
) {
    let ttl_ms = shared.config.node_ttl.as_millis().min(u128::from(u32::MAX)) as u32;
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe = tokio::time::interval(shared.config.probe_interval);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nonce = 0u64;
    let mut outstanding: Option<(u64, Instant)> = None;
    loop {
        let full = |hello: bool| {
            let state = local_state(&hub, &shared, ttl_ms);
            let payload = presence::encode_state(OP_FULL, &state).freeze();
            let _ = control.send(presence_item(payload));
            if hello {
                let _ = control.send(presence_item(bytes::Bytes::from_static(&[OP_HELLO])));
            }
        };
        tokio::select! {
            _ = heartbeat.tick() => full(false),
            _ = shared.resync.notified() => {
                // Both connections coming up trigger this together: coalesce.
                tokio::time::sleep(Duration::from_millis(5)).await;
                full(true);
                heartbeat.reset();
            }
            _ = shared.announce.notified() => {
                // Several nodes' hellos often come together: coalesce.
                tokio::time::sleep(Duration::from_millis(5)).await;
                full(false);
                heartbeat.reset();
            }
            _ = shared.wake_presence.notified() => {
                tokio::time::sleep(shared.config.presence_coalesce).await;
                let (users, rooms) = {
                    let mut dirty = lock(&shared.dirty);
                    dirty.connections = false;
                    (std::mem::take(&mut dirty.users), std::mem::take(&mut dirty.rooms))
                };
                let delta = State {
                    members: shared.presence.take_dirty_members(),
                    ttl_ms,
                    connections: hub.local_connection_count() as u32,
                    users: users
                        .into_iter()
                        .map(|u| {
                            let n = hub.local_device_count(&u) as u32;
                            (u, n)
                        })
                        .collect(),
                    rooms: rooms
                        .into_iter()
                        .map(|r| {
                            let n = hub.local_room_size(&r) as u32;
                            (r, n)
                        })
                        .collect(),
                };
                let payload = presence::encode_state(presence::OP_DELTA, &delta).freeze();
                let _ = control.send(presence_item(payload));
            }
            _ = probe.tick() => {
                // Expires silent nodes even when nobody queries presence (their users go
                // offline here unless connected elsewhere).
                shared.settle(&hub);
                // ORDERING: nonces are only compared; see the publisher and subscriber.
                let published = shared.probe_published.load(Ordering::Relaxed);
                let seen = shared.probe_seen.load(Ordering::Relaxed);
                if let Some((n, at)) = outstanding {
                    if seen >= n {
                        outstanding = None;
                    } else if published >= n && at.elapsed() >= shared.config.probe_timeout {
                        Counters::bump(&shared.counters.probe_stalls, 1);
                        shared.rebuild_subscriber.notify_one();
                        outstanding = None;
                    } else if published < n && at.elapsed() >= shared.config.probe_timeout {
                        // Never reached Redis (publisher down): not the subscriber's fault.
                        outstanding = None;
                    }
                }
                if outstanding.is_none() && Shared::flag(&shared.subscriber_up) {
                    nonce += 1;
                    outstanding = Some((nonce, Instant::now()));
                    let _ = control.send(Outbound {
                        kind: Kind::Probe,
                        target: StrArc::clone(&shared.node).as_ref().into(),
                        node: None,
                        except: None,
                        flags: envelope::FLAG_BINARY,
                        payload: bytes::Bytes::new(),
                        probe: nonce,
                    });
                }
            }
        }
    }
}
