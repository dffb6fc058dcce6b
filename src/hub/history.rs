//! The hub's side of room history: publishing with a position, the room's log, and joins
//! with `since` (the log and its protocol are `src/history.rs`).

use std::sync::Arc as StrArc;

use smallvec::SmallVec;

use super::StreamHub;
use crate::cluster_link::{ClusterLink, Except};
use crate::entry::SocketEntry;
use crate::error::StreamError;
use crate::history::{Recovery, RoomLog, StreamPosition};
use crate::message::SocketMessage;
use crate::report::BroadcastReport;
use crate::room::{BURST_INLINE, RoomCell};
use crate::shared_message::SharedMessage;
use crate::sync::Arc;

/// What [`StreamHub::publish_to_room`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The message's position in the room's history; `None` if the room has none.
    pub position: Option<StreamPosition>,
    /// The deliveries this call made (see [`StreamHub::publish_to_room`]).
    pub report: BroadcastReport,
}

impl StreamHub {
    /// Publishes to a room the message `build` makes from its position in the room's history,
    /// to every member except `except` (if given). Returns the position (`None` for a room
    /// without history: `build` then gets `StreamPosition { epoch: 0, offset: 0 }`) and what
    /// this call delivered.
    ///
    /// This is how an application puts the position *into* the payload (a chat frame carrying
    /// `epoch` and `offset`, so a client can rejoin with
    /// [`join_room_since`](Self::join_room_since)). The offset is assigned without a lock and
    /// `build` runs once, before the message is stored; keep it short (it is on the broadcast
    /// path). With concurrent publishers into one room, members receive the messages in offset
    /// order; one of the publishers delivers the others' messages, so a report can count more
    /// (or fewer: zero) recipients than this message's own.
    /// [`broadcast_to_room`](Self::broadcast_to_room) into a room with history also goes
    /// through the log (with the message stamped by [`HistoryConfig::stamp`](crate::HistoryConfig::stamp), if set; a
    /// message `build` made is not stamped on a single node).
    ///
    /// **With a cluster** (feature `redis`) the offset is assigned by Redis, after this call
    /// returns, so `build` gets `StreamPosition { epoch: 0, offset: 0 }`, the position is
    /// written in on every node by the [`HistoryConfig::stamp`](crate::HistoryConfig::stamp), and `position` is `None`;
    /// the report is empty, as even this node's members receive the message when it comes
    /// back from Redis (one round trip later), in offset order. An application that runs on
    /// both builds without a position when it gets 0 and lets the stamp add it.
    ///
    /// # Errors
    ///
    /// [`StreamError::EmptyRoomName`] / [`StreamError::RoomNameTooLong`] for a bad name.
    ///
    /// # Examples
    ///
    /// ```
    /// use nucleus_stream::{channel, HistoryConfig, HubConfig, QueueConfig, SocketMessage, StreamHub, WebSocket};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let hub = StreamHub::with_config(HubConfig::default().history(HistoryConfig::default().prefix("")));
    /// let (tx, mut rx) = channel(QueueConfig::default());
    /// hub.register(WebSocket::new("a", tx)).await?;
    /// hub.join_room("a", "news").await?;
    /// let published = hub
    ///     .publish_to_room("news", None, |pos| SocketMessage::text(format!("#{}", pos.offset)))
    ///     .await?;
    /// assert_eq!(published.position.map(|p| p.offset), Some(1));
    /// assert_eq!(rx.recv().await, Some(SocketMessage::text("#1")));
    /// # Ok::<(), nucleus_stream::StreamError>(())
    /// # }).unwrap();
    /// ```
    pub async fn publish_to_room(
        &self,
        room: &str,
        except: Option<&str>,
        build: impl FnOnce(StreamPosition) -> SocketMessage,
    ) -> Result<Published, StreamError> {
        self.check_room_name(room)?;
        match self.logged_room(room) {
            Some((log, cell)) => {
                let (position, report) =
                    self.publish_built(&log, cell.as_ref(), room, except, false, build);
                Ok(Published { position, report })
            }
            None => {
                let msg = build(StreamPosition::new(0, 0));
                let report = self.broadcast_room_now(room, msg, except)?;
                Ok(Published {
                    position: None,
                    report,
                })
            }
        }
    }

    /// Publishes a burst to a room: for each item in order, the message `build` makes from
    /// it and its position, as [`publish_to_room`](Self::publish_to_room) would one call per
    /// item. Returns the last message's position and the deliveries of the whole burst
    /// (a report counts each message's recipients, so 3 messages to 10 members queue 30).
    ///
    /// In a room without history the burst is delivered recipient-major: each member's
    /// queue takes all of it at once (one reservation, one wake-up), where one call per
    /// message touches every member's queue once per message. That is what a connection
    /// gets from a read of several messages
    /// ([`StreamHandler::on_messages`](crate::StreamHandler::on_messages)); measured in
    /// `BENCHMARKS.md` (run 25). A member whose queue cannot take the whole burst gets it
    /// message by message under its [`OverflowPolicy`](crate::OverflowPolicy), so it may
    /// keep a prefix, as it would with one call per message. In a room with history each
    /// message is published in turn (each is logged with its own position, as by
    /// `publish_to_room`).
    ///
    /// # Errors
    ///
    /// [`StreamError::EmptyRoomName`] / [`StreamError::RoomNameTooLong`] for a bad name;
    /// nothing is built or sent then.
    ///
    /// # Examples
    ///
    /// ```
    /// use nucleus_stream::{channel, QueueConfig, SocketMessage, StreamHub, WebSocket};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let hub = StreamHub::new();
    /// let (tx, mut rx) = channel(QueueConfig::default());
    /// hub.register(WebSocket::new("a", tx)).await?;
    /// hub.join_room("a", "news").await?;
    /// let published = hub
    ///     .publish_many_to_room("news", None, ["one", "two"], |text, _| SocketMessage::text(text))
    ///     .await?;
    /// assert_eq!(published.report.queued, 2);
    /// assert_eq!(rx.recv().await, Some(SocketMessage::text("one")));
    /// assert_eq!(rx.recv().await, Some(SocketMessage::text("two")));
    /// # Ok::<(), nucleus_stream::StreamError>(())
    /// # }).unwrap();
    /// ```
    pub async fn publish_many_to_room<T>(
        &self,
        room: &str,
        except: Option<&str>,
        items: impl IntoIterator<Item = T>,
        mut build: impl FnMut(T, StreamPosition) -> SocketMessage,
    ) -> Result<Published, StreamError> {
        self.check_room_name(room)?;
        if let Some((log, cell)) = self.logged_room(room) {
            let mut published = Published::default();
            for item in items {
                let (position, report) =
                    self.publish_built(&log, cell.as_ref(), room, except, false, |pos| {
                        build(item, pos)
                    });
                published.position = position;
                published.report.add(report);
            }
            return Ok(published);
        }
        let msgs: SmallVec<[SharedMessage; BURST_INLINE]> = items
            .into_iter()
            .map(|item| SharedMessage::new(build(item, StreamPosition::new(0, 0))))
            .collect();
        if msgs.is_empty() {
            return Ok(Published::default());
        }
        let (report, except_local) = self.deliver_room_burst(room, &msgs, except);
        if let Some(link) = self.link() {
            let except = except.map(|id| Except::new(id, except_local));
            for msg in &msgs {
                link.room_broadcast(room, msg, except);
            }
        }
        Ok(Published {
            position: None,
            report,
        })
    }

    /// Appends to `log` and delivers (or leaves delivery to the room's current deliverer),
    /// then hands the message to the cluster. With a cluster link that keeps history, the
    /// message goes to the link only (`build` gets position 0): the store assigns the offset
    /// and every node, this one included, delivers it when it comes back.
    ///
    /// `build` here ignores its position (a plain broadcast): the message is stamped
    /// ([`HistoryConfig::stamp`](crate::HistoryConfig::stamp)).
    pub(super) fn publish_logged(
        &self,
        log: &RoomLog,
        cell: Option<&Arc<RoomCell>>,
        room: &str,
        except: Option<&str>,
        build: impl FnOnce(StreamPosition) -> SocketMessage,
    ) -> (Option<StreamPosition>, BroadcastReport) {
        self.publish_built(log, cell, room, except, true, build)
    }

    /// [`publish_logged`](Self::publish_logged); `stamp`: whether the stamp applies on this
    /// node (`false` when `build` put the position in itself). Across a cluster the stamp
    /// always applies, as `build` cannot know the position there.
    fn publish_built(
        &self,
        log: &RoomLog,
        cell: Option<&Arc<RoomCell>>,
        room: &str,
        except: Option<&str>,
        stamp: bool,
        build: impl FnOnce(StreamPosition) -> SocketMessage,
    ) -> (Option<StreamPosition>, BroadcastReport) {
        let except_entry = except.and_then(|id| self.inner.sockets.get(id));
        let except_local = except_entry.is_some();
        let link = self.link();
        if let Some(link) = link.filter(|link| link.keeps_history()) {
            let msg = build(StreamPosition::new(0, 0));
            let to_link = except.map(|id| Except::new(id, except_local));
            if link.history_publish(room, &msg, to_link).is_ok() {
                return (None, BroadcastReport::default());
            }
            // Redis unreachable (or the backlog full; the link counts it): this node's members
            // still get the message, live only — no position, not in the log.
            return (
                None,
                self.deliver_room(room, &SharedMessage::new(msg), except).0,
            );
        }
        let history = &self.inner.config.history;
        let mut for_link = None;
        let (position, report) = log.publish(
            |pos| {
                let msg = match stamp {
                    true => history.stamped(pos, build(pos)),
                    false => build(pos),
                };
                if link.is_some() {
                    for_link = Some(msg.clone());
                }
                msg
            },
            except_entry,
            &|msg, except| {
                // The cell found at publish time is current unless it emptied meanwhile (a
                // cell is replaced only once dead, i.e. empty): then look the room up again.
                if let Some(cell) = cell {
                    let members = cell.load();
                    if members.len() > 0 {
                        return members.broadcast(msg, except);
                    }
                }
                self.deliver_snapshot(room, msg, except)
            },
        );
        if let (Some(link), Some(msg)) = (link, for_link) {
            let except = except.map(|id| Except::new(id, except_local));
            link.room_broadcast(room, &msg, except);
        }
        (Some(position), report)
    }

    /// A message of a room with history as the cluster's store positioned it (the link calls
    /// this for every such message it receives, its own node's included, in the order of the
    /// node's subscription): stamped, kept in the room's ring and delivered to the local
    /// members (except `except`). A duplicate (at or below the ring's top) is dropped.
    #[cfg_attr(not(any(feature = "redis", nucleus_loom)), allow(dead_code))]
    pub(crate) fn deliver_history(
        &self,
        room: &str,
        pos: StreamPosition,
        msg: SocketMessage,
        except: Option<&str>,
    ) -> BroadcastReport {
        let Some(log) = self.log_for(room) else {
            return self.deliver_room(room, &SharedMessage::new(msg), except).0;
        };
        let msg = self.inner.config.history.stamped(pos, msg);
        let except = except.and_then(|id| self.inner.sockets.get(id));
        log.append_at(pos, msg, except, &|msg, except| {
            self.deliver_snapshot(room, msg, except)
        })
        .unwrap_or_default()
    }

    /// The log of a room with history and its current cell (if it has members), with one
    /// index lookup when the room exists; `None` if the room keeps no history.
    pub(super) fn logged_room(&self, room: &str) -> Option<(Arc<RoomLog>, Option<Arc<RoomCell>>)> {
        match self.inner.rooms.get(room) {
            Some(cell) => cell.log.clone().map(|log| (log, Some(cell))),
            None => self.log_for(room).map(|log| (log, None)),
        }
    }

    /// The room's history log, created on first use, if the room keeps a history. Creating
    /// it takes the logs index's shard lock once per room; afterwards it is a lock-free lookup.
    pub(super) fn log_for(&self, room: &str) -> Option<Arc<RoomLog>> {
        let history = &self.inner.config.history;
        if !history.covers(room) {
            return None;
        }
        if let Some(log) = self.inner.logs.get(room) {
            return Some(log);
        }
        Some(self.inner.logs.update(room, |map| match map.get(room) {
            Some(log) => (Arc::clone(log), None),
            None => {
                let log = Arc::new(RoomLog::new(history));
                let mut next = map.clone();
                next.insert(StrArc::from(room), Arc::clone(&log));
                (log, Some(next))
            }
        }))
    }

    /// The position of the last message delivered in a room with history (`None` for a room
    /// without history). A client that joins now without a position gets what comes after it.
    pub fn room_position(&self, room: &str) -> Option<StreamPosition> {
        self.log_for(room).map(|log| log.position())
    }

    /// Joins a room at a position of its history: the socket first receives every message
    /// published after `since`, in order, then the live stream — with no gap and no duplicate
    /// between the two, even while others publish. If the position is not covered any more
    /// (another epoch, older than the room's window, or from the future), nothing is
    /// replayed, the socket joins live, and [`Recovery::recovered`] is `false`: the
    /// application reloads its state. `since: None` joins live and reports the position.
    ///
    /// In a room without history this is [`join_room`](Self::join_room) and reports
    /// `recovered: false` at `StreamPosition { epoch: 0, offset: 0 }`. A socket that already
    /// is a member gets nothing replayed.
    ///
    /// Replayed messages go into the socket's queue like live ones (a queue smaller than
    /// the gap applies its overflow policy). The join may wait for the room's current
    /// deliverer to finish a batch; publishers never wait for a join.
    ///
    /// # Errors
    ///
    /// As [`join_room`](Self::join_room).
    ///
    /// # Examples
    ///
    /// ```
    /// use nucleus_stream::{channel, HistoryConfig, HubConfig, QueueConfig, SocketMessage, StreamHub, WebSocket};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let hub = StreamHub::with_config(HubConfig::default().history(HistoryConfig::default().prefix("")));
    /// let (tx, _rx) = channel(QueueConfig::default());
    /// hub.register(WebSocket::new("a", tx)).await?;
    /// hub.join_room("a", "news").await?;
    /// let first = hub.broadcast_to_room("news", SocketMessage::text("one")).await?;
    /// let seen = hub.room_position("news").expect("history room");
    /// hub.broadcast_to_room("news", SocketMessage::text("two")).await?;
    ///
    /// // A client that saw "one" comes back on a new socket.
    /// let (tx, mut rx) = channel(QueueConfig::default());
    /// hub.register(WebSocket::new("b", tx)).await?;
    /// let recovery = hub.join_room_since("b", "news", Some(seen)).await?;
    /// assert!(recovery.recovered);
    /// assert_eq!(recovery.replayed, 1);
    /// assert_eq!(rx.recv().await, Some(SocketMessage::text("two")));
    /// # let _ = first;
    /// # Ok::<(), nucleus_stream::StreamError>(())
    /// # }).unwrap();
    /// ```
    pub async fn join_room_since(
        &self,
        socket_id: &str,
        room: &str,
        since: Option<StreamPosition>,
    ) -> Result<Recovery, StreamError> {
        if let (Some(since), Some(link)) = (since, self.link()) {
            if link.keeps_history() && self.inner.config.history.covers(room) {
                self.check_room_name(room)?;
                if !self.is_in_room(socket_id, room).await {
                    let link = StrArc::clone(link);
                    return self
                        .join_since_cluster(&*link, socket_id, room, since)
                        .await;
                }
            }
        }
        self.join_since_now(socket_id, room, since)
    }

    /// With a cluster link that keeps history: from this node's ring if it covers `since`
    /// (it has listened to the room all along), otherwise from the store
    /// ([`recover_from_store`](Self::recover_from_store)).
    async fn join_since_cluster(
        &self,
        link: &dyn ClusterLink,
        socket_id: &str,
        room: &str,
        since: StreamPosition,
    ) -> Result<Recovery, StreamError> {
        let log = self.log_for(room).ok_or(StreamError::EmptyRoomName)?;
        let entry = self
            .inner
            .sockets
            .get(socket_id)
            .ok_or_else(|| StreamError::SocketNotFound(socket_id.to_string()))?;
        if let Some(recovery) = self.join_through_ring(&log, &entry, room, since, false)? {
            return Ok(recovery);
        }
        link.history_hold(room, true);
        let outcome = self
            .recover_from_store(link, &log, &entry, room, since)
            .await;
        link.history_hold(room, false);
        outcome
    }

    /// [`RoomLog::join_covered`] for `entry`: joins it at `at` through the ring if the ring
    /// covers `at` (`seed`: start an idle ring over there), replaying into its queue.
    fn join_through_ring(
        &self,
        log: &RoomLog,
        entry: &SocketEntry,
        room: &str,
        at: StreamPosition,
        seed: bool,
    ) -> Result<Option<Recovery>, StreamError> {
        let queue = entry.socket.sender().shared();
        log.join_covered(
            at,
            seed,
            || self.local_room_size(room) == 0,
            || self.join_now(entry.socket.id(), room),
            |msg| {
                let _ = queue.push(msg.clone());
            },
            &|msg, except| self.deliver_snapshot(room, msg, except),
        )
    }

    /// The seam across the store: while this node listens to the room (held), read
    /// `(cursor, top]` from the store into the socket's queue, then join at `top` through
    /// the ring, which is fed by the same subscription: it covers `(top, ..]` once the node
    /// has received `top` (else read again from the new cursor). Offsets dedup the two: the
    /// ring replays only what is after `top`, and the socket is a member only from there.
    /// A ring with no local member behind it is started over at `top` (its in-flight
    /// messages up to `top` are then duplicates and dropped).
    async fn recover_from_store(
        &self,
        link: &dyn ClusterLink,
        log: &RoomLog,
        entry: &SocketEntry,
        room: &str,
        since: StreamPosition,
    ) -> Result<Recovery, StreamError> {
        /// Reads of the store before giving up (each is one round trip, which paces the
        /// loop while the subscription catches up with the store: messages in flight arrive
        /// within about one).
        const ATTEMPTS: usize = 100;
        let history = &self.inner.config.history;
        let limit = history.message_limit();
        let socket_id = entry.socket.id();
        let queue = entry.socket.sender().shared();
        let mut cursor = since;
        let mut replayed = 0;
        let live = |replayed: u64| {
            let mut recovery = self.join_since_now(socket_id, room, None)?;
            recovery.replayed = replayed;
            Ok(recovery)
        };
        for _ in 0..ATTEMPTS {
            let Ok(range) = link.history_range(room, cursor.offset, limit).await else {
                return live(replayed);
            };
            let missing = range.top.saturating_sub(cursor.offset);
            let contiguous = range.entries.len() as u64 == missing
                && range
                    .entries
                    .iter()
                    .zip(cursor.offset + 1..)
                    .all(|(e, offset)| e.offset == offset);
            let young = range
                .entries
                .first()
                .is_none_or(|e| e.age <= history.age_limit());
            if range.epoch != cursor.epoch
                || cursor.offset > range.top
                || range.top - since.offset > limit as u64
                || !contiguous
                || !young
            {
                return live(replayed);
            }
            for e in range.entries {
                if e.except.as_deref() != Some(socket_id) {
                    let pos = StreamPosition::new(range.epoch, e.offset);
                    let _ = queue.push(SharedMessage::new(history.stamped(pos, e.msg)));
                }
                replayed += 1;
            }
            cursor = StreamPosition::new(range.epoch, range.top);
            if let Some(mut recovery) = self.join_through_ring(log, entry, room, cursor, true)? {
                recovery.replayed += replayed;
                return Ok(recovery);
            }
        }
        live(replayed)
    }

    fn join_since_now(
        &self,
        socket_id: &str,
        room: &str,
        since: Option<StreamPosition>,
    ) -> Result<Recovery, StreamError> {
        self.check_room_name(room)?;
        let Some(log) = self.log_for(room) else {
            let joined = self.join_now(socket_id, room)?;
            return Ok(Recovery {
                recovered: false,
                replayed: 0,
                position: StreamPosition::new(0, 0),
                joined,
            });
        };
        let entry = self
            .inner
            .sockets
            .get(socket_id)
            .ok_or_else(|| StreamError::SocketNotFound(socket_id.to_string()))?;
        let queue = entry.socket.sender().shared();
        log.join_since(
            since,
            || self.join_now(socket_id, room),
            |msg| {
                let _ = queue.push(msg.clone());
            },
            &|msg, except| self.deliver_snapshot(room, msg, except),
        )
    }

    /// The cluster link's subscription was (re)built: every ring may have missed messages
    /// meanwhile, so until its next message a recovery reads Redis instead of trusting it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn history_resubscribed(&self) {
        self.inner.logs.for_each(|_, log| log.mark_stale());
    }

    /// Loom models only: [`deliver_history`](Self::deliver_history) (what a cluster link's
    /// subscriber does per message).
    #[cfg(nucleus_loom)]
    #[doc(hidden)]
    pub fn loom_deliver_history(&self, room: &str, pos: StreamPosition, msg: SocketMessage) {
        self.deliver_history(room, pos, msg, None);
    }

    /// Loom models only: the ring step of a cluster recovery — join `socket_id` at `since`
    /// through the room's ring (`seed`: the caller has read up to `since` from the store).
    #[cfg(nucleus_loom)]
    #[doc(hidden)]
    pub fn loom_join_covered(
        &self,
        socket_id: &str,
        room: &str,
        since: StreamPosition,
        seed: bool,
    ) -> Option<Recovery> {
        let log = self.log_for(room)?;
        let entry = self.inner.sockets.get(socket_id)?;
        let queue = entry.socket.sender().shared();
        log.join_covered(
            since,
            seed,
            || self.local_room_size(room) == 0,
            || self.join_now(socket_id, room),
            |msg| {
                let _ = queue.push(msg.clone());
            },
            &|msg, except| self.deliver_snapshot(room, msg, except),
        )
        .ok()
        .flatten()
    }

    /// Pushes to the members of the room's current snapshot.
    fn deliver_snapshot(
        &self,
        room: &str,
        msg: &SharedMessage,
        except: *const SocketEntry,
    ) -> BroadcastReport {
        self.inner
            .rooms
            .with(room, |cell| cell.load().broadcast(msg, except))
            .unwrap_or_default()
    }
}
