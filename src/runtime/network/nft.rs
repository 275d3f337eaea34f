//! nftables over netlink (`NETLINK_NETFILTER`), without the `nft` program: the bridge's
//! masquerade table is added in one batch and deleted in one, and a chain's existence is asked
//! with one read-only `GETCHAIN`. The messages are built with `netlink-packet-netfilter`
//! (rust-netlink's netfilter types, the family of the `netlink-packet-route` used for links);
//! answers are only acknowledgements and errors, read from their netlink headers.
//!
//! Only Berth's own table (`ip berth_<bridge>`) is ever written here: rules in tables that other
//! programs manage (docker's `filter` table through iptables-nft) stay with their own tools.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use netlink_packet_core_nf::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_netfilter::nftables::{Bitwise, ChainMessage};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook, InetHookNumber, ListAttribute, Meta,
    MetaKey, NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

/// `NFNL_SUBSYS_NFTABLES`: the batch messages name the subsystem they carry.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// Netlink's error/acknowledgement message type.
const NLMSG_ERROR: u16 = 2;
/// The priority `srcnat` of nft's syntax.
const PRIORITY_SRCNAT: i32 = 100;
/// `NF_ACCEPT`, a base chain's policy.
const POLICY_ACCEPT: u32 = 1;
/// `NFT_PAYLOAD_NETWORK_HEADER`.
const PAYLOAD_NETWORK_HEADER: u32 = 1;
/// IPv4 source address: 4 bytes at offset 12 of the header.
const IPV4_SADDR_OFFSET: u32 = 12;

/// A netfilter netlink socket in the calling thread's network namespace.
pub(super) struct Nfnl {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl Nfnl {
    pub(super) fn open() -> anyhow::Result<Nfnl> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)
            .context("cannot open a netfilter netlink socket")?;
        socket.bind_auto()?;
        // Never wait forever for an answer the kernel owes (it always sends one).
        let timeout = libc::timeval { tv_sec: 10, tv_usec: 0 };
        // SAFETY: setsockopt on a socket we own, with a timeval of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Nfnl { socket, seq: 0 })
    }

    /// Adds `table ip TABLE { chain postrouting { type nat hook postrouting priority srcnat;
    /// policy accept; ip saddr SUBNET oifname != "BRIDGE" masquerade } }` as one transaction:
    /// all of it or, on an error, nothing. Fails if the table exists.
    pub(super) fn add_masquerade_table(&mut self, table: &str, subnet: Ipv4Net, bridge: &str) -> anyhow::Result<()> {
        let new_table =
            NfTablesMessage::NewTable(TableMessage { attributes: vec![TableAttribute::Name(table.to_string())] });
        let new_chain = NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(table.to_string()),
                ChainAttribute::Name("postrouting".to_string()),
                ChainAttribute::Hook(vec![
                    Hook::Number(InetHookNumber::PostRouting.into()),
                    Hook::Priority(PRIORITY_SRCNAT as u32),
                ]),
                ChainAttribute::Policy(POLICY_ACCEPT),
                ChainAttribute::Type("nat".to_string()),
            ],
        });
        let new_rule = NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.to_string()),
                RuleAttribute::Chain("postrouting".to_string()),
                RuleAttribute::Expressions(masquerade_expressions(subnet, bridge)),
            ],
        });
        self.batch(vec![
            (new_table, NLM_F_CREATE | NLM_F_EXCL),
            (new_chain, NLM_F_CREATE | NLM_F_EXCL),
            (new_rule, NLM_F_CREATE),
        ])
        .with_context(|| format!("cannot add the nftables table ip {table}"))
    }

    /// Deletes `table ip TABLE` with everything in it; `Ok(false)` if there was none.
    pub(super) fn delete_table(&mut self, table: &str) -> anyhow::Result<bool> {
        let del =
            NfTablesMessage::DeleteTable(TableMessage { attributes: vec![TableAttribute::Name(table.to_string())] });
        match self.batch(vec![(del, 0)]) {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.context(format!("cannot delete the nftables table ip {table}"))),
        }
    }

    /// Whether `chain ip TABLE CHAIN` exists (read-only).
    pub(super) fn chain_exists(&mut self, table: &str, chain: &str) -> anyhow::Result<bool> {
        let get = NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(table.to_string()), ChainAttribute::Name(chain.to_string())],
        });
        let seq = self.next_seq();
        let mut buf = Vec::new();
        encode(&mut buf, NetfilterProtoFamily::IPv4, get.into(), NLM_F_REQUEST | NLM_F_ACK, seq);
        self.socket.send(&buf, 0).context("netfilter netlink send")?;
        // The answer: the chain (NEWCHAIN) then an acknowledgement, or an error (ENOENT).
        let mut found = false;
        let result = self.receive(|msg_seq, kind, error| {
            if msg_seq != seq {
                return None;
            }
            match (kind, error) {
                (NLMSG_ERROR, Some(0)) => Some(Ok(())),
                (NLMSG_ERROR, Some(code)) => Some(Err(std::io::Error::from_raw_os_error(-code).into())),
                _ => {
                    found = true;
                    None
                }
            }
        });
        match result {
            Ok(()) => Ok(found),
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.context(format!("cannot look up the chain ip {table} {chain}"))),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// Sends the messages as one nftables transaction (between BATCH_BEGIN and BATCH_END),
    /// each with an acknowledgement requested, and waits for all of them; returns the first
    /// error (the kernel then applies none of the batch).
    fn batch(&mut self, messages: Vec<(NfTablesMessage, u16)>) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        let begin = self.next_seq();
        encode(&mut buf, NetfilterProtoFamily::Unspec, ControlMessage::BatchBegin.into(), NLM_F_REQUEST, begin);
        let first = self.seq + 1;
        for (message, flags) in messages {
            let seq = self.next_seq();
            encode(&mut buf, NetfilterProtoFamily::IPv4, message.into(), NLM_F_REQUEST | NLM_F_ACK | flags, seq);
        }
        let last = self.seq;
        let end = self.next_seq();
        encode(&mut buf, NetfilterProtoFamily::Unspec, ControlMessage::BatchEnd.into(), NLM_F_REQUEST, end);
        self.socket.send(&buf, 0).context("netfilter netlink send")?;
        let mut first_error: Option<i32> = None;
        let mut pending = (first..=last).collect::<Vec<u32>>();
        self.receive(|seq, kind, error| {
            if kind != NLMSG_ERROR {
                return None;
            }
            if let Some(code) = error.filter(|c| *c != 0) {
                first_error.get_or_insert(code);
            }
            pending.retain(|s| *s != seq);
            // The batch's own messages (begin/end) are acknowledged only on an error.
            if pending.is_empty() || (seq == begin || seq == end) && error.is_some_and(|c| c != 0) {
                Some(Ok(()))
            } else {
                None
            }
        })?;
        match first_error {
            None => Ok(()),
            Some(code) => Err(std::io::Error::from_raw_os_error(-code).into()),
        }
    }

    /// Reads netlink messages and gives each one's sequence number, type and (for an error
    /// message) error code to `each`, until it returns a result.
    fn receive(
        &mut self,
        mut each: impl FnMut(u32, u16, Option<i32>) -> Option<anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0).context("netfilter netlink receive")?;
            let mut offset = 0;
            while offset + 16 <= n {
                let header = &buf[offset..n];
                let len = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(header[4..6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(header[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > header.len() {
                    bail!("netfilter netlink: a malformed answer");
                }
                let error = (kind == NLMSG_ERROR && len >= 20)
                    .then(|| i32::from_ne_bytes(header[16..20].try_into().expect("4 bytes")));
                if let Some(result) = each(seq, kind, error) {
                    return result;
                }
                offset += (len + 3) & !3;
            }
        }
    }
}

/// `ip saddr SUBNET oifname != "BRIDGE" masquerade`, as nft compiles it.
fn masquerade_expressions(subnet: Ipv4Net, bridge: &str) -> Vec<ListAttribute<ExpressionAttribute>> {
    let mut name = [0u8; 16]; // IFNAMSIZ, zero-padded as nft sends names
    name[..bridge.len()].copy_from_slice(bridge.as_bytes());
    vec![
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(PAYLOAD_NETWORK_HEADER),
            Payload::Offset(IPV4_SADDR_OFFSET),
            Payload::Len(4),
        ])
        .into(),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(subnet.netmask().octets().to_vec())),
            Bitwise::Xor(DataAttribute::Value(Ipv4Addr::UNSPECIFIED.octets().to_vec())),
        ])
        .into(),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(subnet.network().octets().to_vec())),
        ])
        .into(),
        Expressions::Meta(vec![Meta::Key(MetaKey::Oifname), Meta::DestinationRegister(Register::Reg1)]).into(),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::NotEqual),
            Cmp::Data(DataAttribute::Value(name.to_vec())),
        ])
        .into(),
        ListAttribute::Element(vec![ExpressionAttribute::Name("masq".to_string())]),
    ]
}

/// Appends one netlink message to `buf`.
fn encode(buf: &mut Vec<u8>, family: NetfilterProtoFamily, inner: NetfilterMessageInner, flags: u16, seq: u32) {
    let res_id = match inner {
        NetfilterMessageInner::None(_) => NFNL_SUBSYS_NFTABLES,
        _ => 0,
    };
    let mut msg = NetlinkMessage::from(NetfilterMessage::new(NetfilterHeader::new(family, 0, res_id), inner));
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let start = buf.len();
    buf.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut buf[start..]);
}

/// The OS error code in an error chain, if any.
pub(super) fn errno(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()).and_then(|e| e.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_for_the_nftables_subsystem() {
        let mut buf = Vec::new();
        encode(&mut buf, NetfilterProtoFamily::Unspec, ControlMessage::BatchBegin.into(), NLM_F_REQUEST, 7);
        // nlmsghdr (16) + nfgenmsg (4): type NFNL_MSG_BATCH_BEGIN, res_id NFNL_SUBSYS_NFTABLES (big-endian).
        assert_eq!(buf.len(), 20);
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 0x10);
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        assert_eq!(&buf[16..20], &[0, 0, 0, 10]);
        let rule = masquerade_expressions("10.89.0.0/24".parse().unwrap(), "berth0");
        assert_eq!(rule.len(), 6);
    }
}
