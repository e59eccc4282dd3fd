//! Port choice: every process gets a loopback port picked once and remembered in `state.json`,
//! so restarts find the same addresses and the infrastructure its same data.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::datadir::State;

/// A port the OS considers free right now (bind to port 0, read it back, release it).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether nothing listens on loopback `port`.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Whether nothing listens on `addr`.
pub fn is_free_addr(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// The port remembered for `key`, if it is still free (or `in_use_by_us`), else a new free one,
/// remembered from now on.
pub fn assign(state: &mut State, key: &str, in_use_by_us: bool) -> std::io::Result<u16> {
    if let Some(&port) = state.ports.get(key)
        && (in_use_by_us || is_free(port))
    {
        return Ok(port);
    }
    let port = free_port()?;
    state.ports.insert(key.to_owned(), port);
    Ok(port)
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
}
