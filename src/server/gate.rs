//! Which connections the endpoint keeps open while they wait on their client.
//!
//! Every connection is accepted (a full listen backlog would turn away the
//! kubelet's probe as well as the attacker). A connection *waits* while its
//! client owes bytes: request headers or body not yet complete, an idle
//! keep-alive, or an answer the client does not read. At most [`MAX_WAITING`]
//! wait at once. When one more arrives (or a finished request goes back to
//! waiting), the gate closes the **oldest waiting connection of the peer
//! that holds the most**. A request being handled is never closed.
//!
//! So one peer holding hundreds of half-sent requests only ever displaces
//! its own connections, and a new connection, such as a probe, which sends
//! its request at once, is served: to push it out, a peer would have to open
//! [`MAX_WAITING`] connections in the moment between its accept and its
//! headers. The whole loopback range (127/8 and ::1) counts as one peer,
//! since anyone on the host can pick any address in it, and an IPv6 peer is
//! its /64.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Connections waiting on their client, across all peers.
pub const MAX_WAITING: usize = 256;

/// Who a connection counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// This host: 127/8, ::1, and the admin socket.
    Local,
    /// One IPv4 address.
    V4([u8; 4]),
    /// One IPv6 /64.
    V6([u8; 8]),
}

impl Peer {
    /// The peer an address belongs to.
    pub fn of(ip: IpAddr) -> Peer {
        match ip.to_canonical() {
            ip if ip.is_loopback() => Peer::Local,
            IpAddr::V4(v4) => Peer::V4(v4.octets()),
            IpAddr::V6(v6) => Peer::V6(prefix64(v6)),
        }
    }
}

fn prefix64(v6: Ipv6Addr) -> [u8; 8] {
    let o = v6.octets();
    [o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]]
}

/// The waiting connections of one listener.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    conns: HashMap<u64, Conn>,
    waiting: usize,
}

#[derive(Debug)]
struct Conn {
    peer: Peer,
    /// When it last started waiting (a sequence number); None while busy.
    waiting_since: Option<u64>,
    /// Closes the connection; taken when the gate closes it.
    close: Option<oneshot::Sender<()>>,
}

impl Gate {
    /// A gate letting at most `max` connections wait.
    pub fn new(max: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection from `peer`, waiting for its request. The receiver
    /// fires when the gate closes it to make room.
    pub fn admit(self: &Arc<Self>, peer: Peer) -> (Ticket, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut s = self.lock();
        self.make_room(&mut s);
        let id = s.next;
        s.next += 1;
        s.conns.insert(
            id,
            Conn {
                peer,
                waiting_since: Some(id),
                close: Some(tx),
            },
        );
        s.waiting += 1;
        drop(s);
        let ticket = Ticket {
            gate: self.clone(),
            id,
        };
        (ticket, rx)
    }

    /// How many connections wait right now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Close waiting connections until one more fits.
    fn make_room(&self, s: &mut State) {
        while s.waiting >= self.max {
            let Some(victim) = victim(&s.conns) else {
                return;
            };
            if let Some(c) = s.conns.get_mut(&victim) {
                c.waiting_since = None;
                if let Some(tx) = c.close.take() {
                    let _ = tx.send(());
                }
            }
            s.waiting -= 1;
        }
    }
}

/// The oldest waiting connection of the peer with the most waiting ones.
fn victim(conns: &HashMap<u64, Conn>) -> Option<u64> {
    // Per peer: (waiting count, oldest waiting_since, its id).
    let mut per: HashMap<Peer, (usize, u64, u64)> = HashMap::new();
    for (&id, c) in conns {
        let Some(since) = c.waiting_since else {
            continue;
        };
        let e = per.entry(c.peer).or_insert((0, since, id));
        e.0 += 1;
        if since < e.1 {
            (e.1, e.2) = (since, id);
        }
    }
    per.values()
        // Most waiting first; on a tie, the peer whose oldest waited longest.
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|&(_, _, id)| id)
}

/// One connection's place in the gate; leaves it on drop.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
}

impl Ticket {
    /// Its request is complete and being handled: never closed meanwhile.
    pub fn busy(&self) {
        let mut s = self.gate.lock();
        if let Some(c) = s.conns.get_mut(&self.id) {
            if c.waiting_since.take().is_some() {
                s.waiting -= 1;
            }
        }
    }

    /// Waiting on the client again (writing the answer, keep-alive).
    pub fn waiting(&self) {
        let mut s = self.gate.lock();
        let closed_already = s.conns.get(&self.id).is_none_or(|c| c.close.is_none());
        if closed_already {
            return;
        }
        self.gate.make_room(&mut s);
        let seq = s.next;
        s.next += 1;
        if let Some(c) = s.conns.get_mut(&self.id) {
            if c.waiting_since.replace(seq).is_none() {
                s.waiting += 1;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        if let Some(c) = s.conns.remove(&self.id) {
            if c.waiting_since.is_some() {
                s.waiting -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8) -> Peer {
        Peer::of(IpAddr::from([10, 0, 0, a]))
    }

    fn closed(rx: &mut oneshot::Receiver<()>) -> bool {
        rx.try_recv().is_ok()
    }

    #[test]
    fn peers_group_loopback_and_ipv6_prefixes() {
        let lo = |s: &str| Peer::of(s.parse().unwrap());
        assert_eq!(lo("127.0.0.1"), Peer::Local);
        assert_eq!(lo("127.8.9.10"), Peer::Local);
        assert_eq!(lo("::1"), Peer::Local);
        assert_eq!(lo("::ffff:127.0.0.1"), Peer::Local);
        assert_eq!(lo("::ffff:10.0.0.1"), lo("10.0.0.1"));
        assert_ne!(lo("10.0.0.1"), lo("10.0.0.2"));
        assert_eq!(lo("2001:db8::1"), lo("2001:db8::ffff:1"));
        assert_ne!(lo("2001:db8::1"), lo("2001:db8:0:1::1"));
    }

    #[test]
    fn a_full_gate_closes_the_oldest_of_the_busiest_peer() {
        let gate = Gate::new(4);
        // Peer 1 holds three, peer 2 one.
        let mut a: Vec<_> = (0..3).map(|_| gate.admit(v4(1))).collect();
        let (_b, mut b_rx) = gate.admit(v4(2));
        assert_eq!(gate.waiting(), 4);
        // A newcomer from a third peer: peer 1's oldest goes.
        let (_c, mut c_rx) = gate.admit(v4(3));
        assert!(closed(&mut a[0].1));
        assert!(!closed(&mut a[1].1) && !closed(&mut a[2].1));
        assert!(!closed(&mut b_rx) && !closed(&mut c_rx));
        assert_eq!(gate.waiting(), 4);
        // Peer 1 reconnects: it displaces itself again, never the others.
        let (_d, mut d_rx) = gate.admit(v4(1));
        assert!(closed(&mut a[1].1));
        assert!(!closed(&mut b_rx) && !closed(&mut c_rx) && !closed(&mut d_rx));
        // Ties: the peer whose oldest waited longest.
        drop(a);
        let gate = Gate::new(2);
        let (_x, mut x_rx) = gate.admit(v4(1));
        let (_y, mut y_rx) = gate.admit(v4(2));
        let (_z, _) = gate.admit(v4(3));
        assert!(closed(&mut x_rx) && !closed(&mut y_rx));
    }

    #[test]
    fn busy_connections_are_never_closed_and_drops_free_room() {
        let gate = Gate::new(2);
        let (a, mut a_rx) = gate.admit(v4(1));
        a.busy();
        let (b, mut b_rx) = gate.admit(v4(1));
        let (_c, _) = gate.admit(v4(1));
        assert_eq!(gate.waiting(), 2);
        // A third waiting one: b is the only waiting one of peer 1 besides c.
        let (_d, _) = gate.admit(v4(1));
        assert!(closed(&mut b_rx), "the oldest waiting one goes");
        assert!(!closed(&mut a_rx), "a busy connection stays");
        // Back to waiting, with the gate full: room is made first.
        a.waiting();
        assert_eq!(gate.waiting(), 2);
        drop(b);
        drop(a);
        assert!(gate.waiting() <= 2);
        let gate = Gate::new(2);
        let (e, _) = gate.admit(v4(1));
        drop(e);
        assert_eq!(gate.waiting(), 0);
        assert!(gate.lock().conns.is_empty());
    }
}
