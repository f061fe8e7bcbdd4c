//! The fast path for a lost link. A thread of its own reads link
//! notifications and withdraws the PvDs of a link that went down at once,
//! while the daemon's pass for the same notification (a dump, routing,
//! every map) waits behind whatever pass is running, or is still running
//! itself. Only clearing availability is done here: bringing a PvD back
//! needs its addresses, gateways and routing, which only a pass knows
//! ([`crate::apply::pvd_table`] keeps the two from undoing each other).
use std::{io, thread};

use log::{debug, warn};
use rtnetlink::sys::Socket;

use crate::{
    apply::pvd_table::SharedPvdTable,
    host::netlink::{self, NetEvent},
};

/// Subscribes in the calling thread's network namespace, then follows from
/// a thread named `mif-link-down` for the life of the process.
pub fn spawn(table: SharedPvdTable) -> io::Result<()> {
    let socket = netlink::link_socket()?;
    thread::Builder::new()
        .name("mif-link-down".into())
        .spawn(move || follow(&socket, &table))?;
    Ok(())
}

fn follow(socket: &Socket, table: &SharedPvdTable) {
    let mut buf = Vec::with_capacity(netlink::DATAGRAM_BUFFER);
    loop {
        buf.clear();
        // MSG_TRUNC: a datagram too long for the buffer shows as such.
        let (len, from) = match socket.recv_from(&mut buf, libc::MSG_TRUNC) {
            Ok(received) => received,
            // ENOBUFS: notifications were lost. The daemon's own event
            // stream sees the same and resynchronises; nothing to do here
            // but read on.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EINTR)) => continue,
            Err(e) => {
                warn!("link-down fast path stopped ({e}); lost links are withdrawn by the regular pass only");
                return;
            }
        };
        // Only the kernel (port 0) speaks for links; a truncated datagram
        // cannot be decoded (the event stream resynchronises on it).
        if from.port_number() != 0 || len > buf.len() {
            continue;
        }
        for event in netlink::decode_events(&buf) {
            if let NetEvent::LinkDown { ifindex } = event {
                withdraw(table, ifindex);
            }
        }
    }
}

fn withdraw(table: &SharedPvdTable, ifindex: u32) {
    match table.lock().link_down(ifindex) {
        Ok(indices) if indices.is_empty() => {}
        Ok(indices) => debug!("link {ifindex} down: PvDs {indices:?} withdrawn"),
        // The pass that follows writes the same again.
        Err(e) => warn!("withdrawing the PvDs of link {ifindex}: {e}"),
    }
}
