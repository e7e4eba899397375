//! The loopback ports a plan picked, held by apphost whenever no instance of
//! its own listens on them: from the plan until the instance that owns a port
//! starts, and again while it is down (a restart's backoff, a chaos stop).
//!
//! A port let go of after the plan went back to the kernel's pool: a second
//! apphost on the machine (or anything binding port 0) could be handed it
//! while this one was still building its services, and the service that
//! wanted it then failed at every restart ("port … is already in use").
//!
//! A port is held by a socket that is bound but not listening, without
//! `SO_REUSEADDR`: no other bind (port 0 included) and no outgoing
//! connection's ephemeral port can take it, and a client connecting to it is
//! refused at once, just as when nothing is there.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    sync::Mutex,
};

use socket2::{Domain, Socket, Type};

#[derive(Default)]
pub struct PortHolds {
    held: Mutex<HashMap<u16, Socket>>,
}

impl std::fmt::Debug for PortHolds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ports: Vec<u16> = self.held.lock().expect("port holds lock").keys().copied().collect();
        ports.sort_unstable();
        f.debug_struct("PortHolds").field("held", &ports).finish()
    }
}

impl PortHolds {
    /// A free loopback port, held from now on; `None` when none can be had.
    pub fn pick(&self) -> Option<u16> {
        let socket = unshared(0).ok()?;
        let port = socket.local_addr().ok()?.as_socket()?.port();
        self.held.lock().expect("port holds lock").insert(port, socket);
        Some(port)
    }

    /// Takes `port` if nothing else listens on it. True when it is free; it
    /// is held too unless a connection that just closed still lingers on it
    /// (a `TIME_WAIT`), which only an `SO_REUSEADDR` bind, a listener, may pass.
    pub fn take(&self, port: u16) -> bool {
        let mut held = self.held.lock().expect("port holds lock");
        let std::collections::hash_map::Entry::Vacant(slot) = held.entry(port) else { return false };
        match unshared(port) {
            Ok(socket) => {
                slot.insert(socket);
                true
            }
            Err(_) => TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
        }
    }

    /// Lets go of `ports`, for the instance about to listen on them.
    pub fn release(&self, ports: impl IntoIterator<Item = u16>) {
        let mut held = self.held.lock().expect("port holds lock");
        for port in ports {
            held.remove(&port);
        }
    }

    /// Holds `ports` again once their instance stopped listening (best
    /// effort: a port still lingering from a closed connection is left).
    pub fn hold(&self, ports: impl IntoIterator<Item = u16>) {
        let mut held = self.held.lock().expect("port holds lock");
        for port in ports {
            if let std::collections::hash_map::Entry::Vacant(slot) = held.entry(port)
                && let Ok(socket) = unshared(port)
            {
                slot.insert(socket);
            }
        }
    }

    #[cfg(test)]
    fn is_held(&self, port: u16) -> bool {
        self.held.lock().expect("port holds lock").contains_key(&port)
    }
}

/// A socket bound to `127.0.0.1:port`, not listening, without `SO_REUSEADDR`.
fn unshared(port: u16) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn a_held_port_is_refused_to_others_and_to_connections_until_released() {
        let holds = PortHolds::default();
        let port = holds.pick().expect("a port");
        assert!(TcpListener::bind(("127.0.0.1", port)).is_err(), "another listener got a held port");
        assert!(TcpListener::bind(("0.0.0.0", port)).is_err(), "a wildcard listener got a held port");
        let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "nothing answers on a held port");
        assert!(!holds.take(port), "a plan takes a port once");

        holds.release([port]);
        let owner = TcpListener::bind(("127.0.0.1", port)).expect("the released port for its instance");
        holds.hold([port]);
        assert!(!holds.is_held(port), "a port its instance listens on is not held");
        drop(owner);
        holds.hold([port]);
        assert!(holds.is_held(port), "a port is held again once its instance let go");
        assert!(TcpListener::bind(("127.0.0.1", port)).is_err());
    }
}
