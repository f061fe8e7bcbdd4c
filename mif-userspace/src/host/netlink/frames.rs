//! Netlink framing for the sockets mif reads by hand: the rtnetlink event
//! stream ([`super::events`], with [`super::ra`] for the router
//! advertisement options in it) and `NETLINK_SOCK_DIAG`
//! ([`crate::apply::sockdiag`]).
//!
//! The header and attribute layouts come from netlink-packet-core's
//! `NetlinkBuffer` and `NlasIterator`. Its `NetlinkMessage` is not used:
//! that parses every payload into a typed message, which fails for
//! `RTM_NEWNDUSEROPT` (netlink-packet-route has no type for it) and for
//! sock_diag (no crate in the tree has its types), and would lose a link
//! message whose attributes a newer kernel made unparsable. So this layer
//! stops at type, sequence number and payload bytes; each reader decodes
//! the payloads it knows.

use std::{iter::FusedIterator, mem::size_of};

use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator, NLA_HEADER_SIZE};

/// `sizeof(struct nlmsghdr)`: netlink-packet-core keeps its own copy
/// private.
const HEADER_LEN: usize = size_of::<libc::nlmsghdr>();

/// Messages in a datagram and attributes in a message both start on
/// 4-byte boundaries (`NLMSG_ALIGNTO`, `NLA_ALIGNTO`).
pub(crate) const ALIGN: usize = netlink_packet_core::NLA_ALIGNTO;

/// Why a datagram or an attribute run could not be framed. Nothing after
/// the bad frame can be: its length is the only way to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes left than a `nlmsghdr`.
    TruncatedHeader,
    /// `nlmsg_len` is shorter than the header or runs past the datagram.
    BadLength,
    /// An attribute whose header is cut short, or whose `nla_len` is
    /// shorter than the header or runs past the end.
    BadAttribute,
}

impl FrameError {
    /// What went wrong, as a `&'static str` for error types that carry
    /// one (`SockDiagError::Malformed`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::TruncatedHeader => "truncated netlink header",
            Self::BadLength => "bad netlink message length",
            Self::BadAttribute => "malformed netlink attribute",
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FrameError {}

/// One netlink message of a datagram: what every reader here needs of
/// the header, and the payload (without the alignment padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub kind: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages of one received datagram, in order. A malformed frame
/// yields one `Err` and ends the iteration: the readers decide whether
/// what came before it still counts (the event stream keeps it and
/// resyncs; sock_diag rejects the whole reply).
pub(crate) fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

/// See [`messages`].
#[derive(Debug, Clone)]
pub(crate) struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        // Taken, so that after an error the iterator stays empty.
        let rest = std::mem::take(&mut self.rest);
        // `new_checked` reports all three faults with one error type; the
        // short header is told apart first for the readers' messages.
        if rest.len() < HEADER_LEN {
            return Some(Err(FrameError::TruncatedHeader));
        }
        let Ok(buffer) = NetlinkBuffer::new_checked(rest) else {
            return Some(Err(FrameError::BadLength));
        };
        let len = buffer.length() as usize;
        let message = Message {
            kind: buffer.message_type(),
            seq: buffer.sequence_number(),
            payload: buffer.payload(),
        };
        // The last message may lack its padding: clamp to the end, as the
        // kernel's netlink_rcv_skb does.
        self.rest = rest.get(len.next_multiple_of(ALIGN)..).unwrap_or_default();
        Some(Ok(message))
    }
}

impl FusedIterator for Messages<'_> {}

/// One netlink attribute: its type (without the `NLA_F_NESTED` and
/// `NLA_F_NET_BYTEORDER` flags) and value (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

/// The attributes in `bytes`, which must start at an attribute. Like
/// [`messages`], a malformed one yields one `Err` and ends the iteration
/// (netlink-packet-core's iterator does the stopping).
pub(crate) fn attributes(bytes: &[u8]) -> impl Iterator<Item = Result<Attribute<'_>, FrameError>> {
    NlasIterator::new(bytes).map(|nla| {
        let nla = nla.map_err(|_| FrameError::BadAttribute)?;
        let (kind, len) = (nla.kind(), usize::from(nla.length()));
        // `into_inner` keeps the slice's lifetime (`NlaBuffer::value`
        // borrows from the buffer value instead); the iterator has
        // checked that `len` is within it and at least a header.
        let value = nla
            .into_inner()
            .get(NLA_HEADER_SIZE..len)
            .ok_or(FrameError::BadAttribute)?;
        Ok(Attribute { kind, value })
    })
}

/// A message to send to the kernel: header with its length filled in,
/// then `payload`. Port id 0: the kernel answers the sending socket,
/// whatever this field says.
pub(crate) fn request(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + payload.len();
    let mut msg = vec![0; len];
    let mut header = NetlinkBuffer::new(&mut msg);
    header.set_length(u32::try_from(len).expect("netlink message longer than 4 GiB"));
    header.set_message_type(kind);
    header.set_flags(flags);
    header.set_sequence_number(seq);
    header.set_port_number(0);
    header.payload_mut().copy_from_slice(payload);
    msg
}

/// Appends an attribute to a payload being built, padded so that the
/// next one is aligned.
pub(crate) fn push_attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let start = out.len();
    let len = NLA_HEADER_SIZE + value.len();
    out.resize(start + len.next_multiple_of(ALIGN), 0);
    let mut nla = NlaBuffer::new(&mut out[start..]);
    nla.set_length(u16::try_from(len).expect("netlink attribute longer than 64 KiB"));
    nla.set_kind(kind);
    nla.value_mut().copy_from_slice(value);
}

/// A message as the kernel sends it, padding included, for the readers'
/// tests.
#[cfg(test)]
pub(crate) fn test_message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut msg = request(kind, 0, seq, payload);
    msg.resize(msg.len().next_multiple_of(ALIGN), 0);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(datagram: &[u8]) -> Vec<Result<Message<'_>, FrameError>> {
        messages(datagram).collect()
    }

    #[test]
    fn header_layout() {
        let msg = request(0x1234, 0x0301, 7, &[1, 2, 3, 4, 5]);
        assert_eq!(msg.len(), 21); // no padding: the length says 21
        assert_eq!(&msg[0..4], &21u32.to_ne_bytes());
        assert_eq!(&msg[4..6], &0x1234u16.to_ne_bytes());
        assert_eq!(&msg[6..8], &0x0301u16.to_ne_bytes());
        assert_eq!(&msg[8..12], &7u32.to_ne_bytes());
        assert_eq!(&msg[12..16], &[0; 4]);
        assert_eq!(&msg[16..], &[1, 2, 3, 4, 5]);
        assert_eq!(
            collect(&msg),
            [Ok(Message {
                kind: 0x1234,
                seq: 7,
                payload: &[1, 2, 3, 4, 5]
            })]
        );
    }

    #[test]
    fn several_messages_and_their_padding() {
        // Payloads of 5, 0 and 8 bytes: the first is padded to 8, and the
        // padding is not part of its payload.
        let datagram = [
            test_message(20, 1, &[9; 5]),
            test_message(3, 2, &[]),
            test_message(2, 3, &[7; 8]),
        ]
        .concat();
        assert_eq!(datagram.len(), 24 + 16 + 24);
        let got: Vec<_> = messages(&datagram).map(Result::unwrap).collect();
        assert_eq!(
            got.iter().map(|m| (m.kind, m.seq)).collect::<Vec<_>>(),
            [(20, 1), (3, 2), (2, 3)]
        );
        assert_eq!(got[0].payload, &[9; 5]);
        assert_eq!(got[1].payload, &[] as &[u8]);
        assert_eq!(got[2].payload, &[7; 8]);
        // The last message without its padding is still whole.
        let unpadded = [test_message(20, 1, &[9; 5]), request(3, 0, 2, &[1])].concat();
        assert_eq!(collect(&unpadded).len(), 2);
        assert!(collect(&unpadded).iter().all(Result::is_ok));
        assert_eq!(collect(&[]), []);
    }

    #[test]
    fn truncated_header() {
        let datagram = [test_message(16, 1, &[0; 4]), vec![0; HEADER_LEN - 1]].concat();
        let got = collect(&datagram);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err(FrameError::TruncatedHeader));
        assert_eq!(collect(&[20, 0, 0]), [Err(FrameError::TruncatedHeader)]);
    }

    #[test]
    fn length_past_the_end() {
        let mut msg = test_message(16, 1, &[0; 4]);
        msg[0..4].copy_from_slice(&21u32.to_ne_bytes());
        assert_eq!(collect(&msg), [Err(FrameError::BadLength)]);
        // A huge length must not overflow anything.
        msg[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(collect(&msg), [Err(FrameError::BadLength)]);
    }

    #[test]
    fn length_below_header_size() {
        for len in [0u32, 1, 15] {
            let mut msg = test_message(16, 1, &[0; 4]);
            msg[0..4].copy_from_slice(&len.to_ne_bytes());
            // Also after a good message: the error ends the iteration, so
            // a zero length cannot loop.
            let datagram = [test_message(16, 1, &[]), msg].concat();
            let got = collect(&datagram);
            assert_eq!(got.len(), 2, "length {len}");
            assert_eq!(got[1], Err(FrameError::BadLength), "length {len}");
        }
    }

    #[test]
    fn attribute_layout() {
        let mut attrs = Vec::new();
        push_attribute(&mut attrs, 1, &[0xaa; 16]);
        push_attribute(&mut attrs, 2, &[1, 2, 3]); // padded to 8
        assert_eq!(attrs.len(), 20 + 8);
        assert_eq!(&attrs[0..2], &20u16.to_ne_bytes());
        assert_eq!(&attrs[2..4], &1u16.to_ne_bytes());
        assert_eq!(&attrs[4..20], &[0xaa; 16]);
        assert_eq!(&attrs[20..22], &7u16.to_ne_bytes()); // unpadded length
        assert_eq!(&attrs[22..24], &2u16.to_ne_bytes());
        assert_eq!(&attrs[24..28], &[1, 2, 3, 0]);
    }

    #[test]
    fn attributes_round_trip() {
        let mut attrs = Vec::new();
        push_attribute(&mut attrs, 1, &[0xaa; 16]);
        push_attribute(&mut attrs, 2, &[1, 2, 3]);
        push_attribute(&mut attrs, 3, &[]);
        let got: Vec<_> = attributes(&attrs).map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                Attribute {
                    kind: 1,
                    value: &[0xaa; 16]
                },
                Attribute {
                    kind: 2,
                    value: &[1, 2, 3]
                },
                Attribute {
                    kind: 3,
                    value: &[]
                },
            ]
        );
    }

    #[test]
    fn attribute_flags_are_masked() {
        let mut attrs = Vec::new();
        push_attribute(&mut attrs, 1, &[5; 4]);
        let flagged = (1u16 | 0x8000 | 0x4000).to_ne_bytes();
        attrs[2..4].copy_from_slice(&flagged);
        let got: Vec<_> = attributes(&attrs).collect();
        assert_eq!(
            got,
            [Ok(Attribute {
                kind: 1,
                value: &[5; 4]
            })]
        );
    }

    #[test]
    fn attributes_with_bad_lengths() {
        let mut good = Vec::new();
        push_attribute(&mut good, 1, &[0; 4]);
        let bad = |len: u16| {
            let mut attr = good.clone();
            attr[0..2].copy_from_slice(&len.to_ne_bytes());
            [good.clone(), attr, good.clone()].concat()
        };
        // Past the end, shorter than the header (0 would loop forever if
        // it were taken as a length): one error after the good one, and
        // nothing after it.
        for len in [0, 3, 17, u16::MAX] {
            let attrs = bad(len);
            let got: Vec<_> = attributes(&attrs).collect();
            assert_eq!(got.len(), 2, "length {len}: {got:?}");
            assert!(got[0].is_ok());
            assert_eq!(got[1], Err(FrameError::BadAttribute), "length {len}");
        }
        // A header cut short.
        let cut = [good.clone(), vec![4, 0]].concat();
        let got: Vec<_> = attributes(&cut).collect();
        assert_eq!(got.last(), Some(&Err(FrameError::BadAttribute)));
        assert_eq!(attributes(&[]).count(), 0);
    }
}
