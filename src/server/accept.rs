//! What a failed `accept` means, for every accept loop (the hyper-served ports and both OTLP/HTTP
//! back-ends): a transient error (the peer gave up, file descriptors or memory ran short) is
//! logged and retried after a pause; any other error means the listening socket is dead, and
//! the server stops with an error naming the port instead of serving with one port gone.

use std::io;
use std::time::Duration;

/// Pause after a transient accept error (such as EMFILE) instead of spinning.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Whether a failed accept leaves the listener usable.
pub(crate) fn is_transient(err: &io::Error) -> bool {
    match err.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock
        | io::ErrorKind::TimedOut
        | io::ErrorKind::OutOfMemory => true,
        _ => is_resource_shortage(err),
    }
}

/// Running out of descriptors or buffers (EMFILE, ENFILE, ENOBUFS, ENOMEM) ends when connections
/// close; the listener itself is fine.
#[cfg(unix)]
fn is_resource_shortage(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(code) if [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM, libc::EPROTO].contains(&code))
}

#[cfg(not(unix))]
fn is_resource_shortage(_err: &io::Error) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortages_and_aborted_handshakes_are_transient_a_dead_socket_is_not() {
        assert!(is_transient(&io::Error::from(io::ErrorKind::ConnectionAborted)));
        #[cfg(unix)]
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS] {
            assert!(is_transient(&io::Error::from_raw_os_error(code)), "{code}");
        }
        #[cfg(unix)]
        for code in [libc::EINVAL, libc::EBADF, libc::ENOTSOCK] {
            assert!(!is_transient(&io::Error::from_raw_os_error(code)), "{code}");
        }
    }
}
