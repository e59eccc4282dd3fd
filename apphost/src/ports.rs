//! Port choice: every process gets a loopback port picked once and remembered in `state.json`,
//! so restarts find the same addresses and the infrastructure its same data.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::datadir::State;

/// A port the OS considers free right now (bind to port 0, read it back, release it).
pub fn free_port() -> std::io::Result<u16> {
    free_ports::<1>().map(|[port]| port)
}

/// `N` distinct free ports. Every listener is held until all are chosen: a port let go can be
/// handed out again at once, so ports picked one [`free_port`] at a time may repeat.
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    for _ in 0..N {
        held.push(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?);
    }
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&held) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Whether nothing listens on loopback `port`.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Whether nothing listens on `addr`.
pub fn is_free_addr(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// The port remembered for `key`, if it is still free (or `in_use_by_us`), else a new free one
/// that no other key holds, remembered from now on.
pub fn assign(state: &mut State, key: &str, in_use_by_us: bool) -> std::io::Result<u16> {
    if let Some(&port) = state.ports.get(key)
        && (in_use_by_us || is_free(port))
    {
        return Ok(port);
    }
    let port = unremembered(state, key)?;
    state.ports.insert(key.to_owned(), port);
    Ok(port)
}

/// A free port that no key but `key` holds in `state`. A port just let go (another key's pick)
/// can be handed out again at once; a few tries find a fresh one.
pub fn unremembered(state: &State, key: &str) -> std::io::Result<u16> {
    for _ in 0..64 {
        let port = free_port()?;
        if !state.ports.iter().any(|(k, &p)| p == port && k != key) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port that another process of the cluster does not hold",
    ))
}

/// `127.0.0.1:<port>`
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_free_port_is_kept_and_a_taken_one_replaced() {
        let mut state = State::default();
        let first = assign(&mut state, "redis", false).unwrap();
        assert_eq!(assign(&mut state, "redis", false).unwrap(), first);

        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, first)).unwrap();
        assert_eq!(assign(&mut state, "redis", true).unwrap(), first);
        let second = assign(&mut state, "redis", false).unwrap();
        assert_ne!(second, first);
        assert_eq!(state.ports["redis"], second);
        drop(held);
    }

    #[test]
    fn ports_picked_together_are_distinct() {
        let ports = free_ports::<16>().unwrap();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 16, "{ports:?}");
    }

    #[test]
    fn a_new_port_is_never_one_another_key_holds() {
        let mut state = State::default();
        for i in 0..32 {
            assign(&mut state, &format!("p{i}"), false).unwrap();
        }
        let distinct: std::collections::BTreeSet<u16> = state.ports.values().copied().collect();
        assert_eq!(distinct.len(), 32, "{:?}", state.ports);
    }
}
