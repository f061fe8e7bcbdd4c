//! mif's kernel programs, attached once to a cgroup2 directory (the root by
//! default) and so run for every socket of every process below it.
//!
//! - `sock_create` resolves the creating process's policy (deepest cgroup
//!   with one wins), picks the first PvD of the policy that is available for
//!   the socket's family and stamps the socket with that PvD's mark (and
//!   interface, for hard binds). Strict policies refuse the socket when no
//!   PvD is available. This is the only decision point: everything later
//!   follows the mark, so a socket never changes PvD halfway.
//! - `connect4/6` give the marked socket its PvD's source address, unless
//!   the application bound it itself, or take it off the PvD when its
//!   policy excludes the destination (see [`exclude`]). IPv6 binds it
//!   (port 0); IPv4 leaves it to the route lookup, whose routes in the
//!   PvD's table name that source.
//! - `sendmsg4/6` set the source of unconnected UDP datagrams to the same
//!   address, unless the application bound an address or gave one with the
//!   datagram; a bound port alone does not count, since the kernel
//!   autobinds one before these hooks run (see [`SourceBy`]).
//! - `connect4/6` and `sendmsg4/6` first send DNS queries of `dns = "pvd"`
//!   policies to the resolver of the socket's PvD; `recvmsg4/6` and
//!   `getpeername4/6` show the application the server it asked (see [`dns`]).
//! - `setsockopt` and `getsockopt` serve the MIF API's `SOL_MIF` level: an
//!   application chooses the PvD of a socket itself, within what its
//!   policy allows (see [`choice`]).
//! - `bind4/6`, `setsockopt`, and `connect6`/`sendmsg4/6` again, keep the
//!   sockets of strict policies on their PvDs (see [`strict`]);
//!   `sock_create` also refuses raw IP sockets to policies with `deny_raw`.
//! - `guard` (`cgroup_skb/egress`) drops packets of strict policies'
//!   sockets that leave by an interface none of the policy's PvDs uses,
//!   whatever routed them there (see [`guard`]). It is attached to strict
//!   policies' cgroups only.
//! - `pkt_guard` (tc egress, on the namespace's interfaces while strict
//!   policies exist) drops the frames of their packet sockets, which pass
//!   no cgroup hook, on the same terms (see [`packet_guard`]).
//! - `tcp_health` (`sock_ops`) reports retransmission timeouts of the
//!   connections this host opens over a PvD, so the daemon notices a dead
//!   network between its probes (see [`tcp_health`]).
//! - `cg_mkdir` and `cg_rmdir` (raw tracepoints, host-wide) give a cgroup
//!   made below the attach cgroup the policy of a `unit`, `app` or `user`
//!   selector that names it, inside `mkdir`, before any process can be in
//!   it, and drop a removed cgroup's entry (see [`cgroup_naming`]).
//!
//! Steering itself is no per-packet work: routing by mark is done by the
//! kernel's policy rules that the daemon installs per PvD. The guard is
//! the one program that runs per packet, and only for sockets created in
//! a strict policy's cgroup or below it.
//!
//! Minimum kernel versions, per hook: `sock_create` 4.10, `connect`/`bind`
//! 4.17, `sendmsg` 4.18, `recvmsg` 5.2, `setsockopt` and `getsockopt` 5.3,
//! `getpeername`
//! 5.8; with what the programs call,
//! 5.7 (netns cookie in `sock_create`, `connect`, `sendmsg`, `bind`),
//! 5.18 (`bpf_set_retval` in `setsockopt`, for the MIF API's errors),
//! 6.0 (`bpf_get_current_ancestor_cgroup_id` in `setsockopt`) and
//! 6.15 (the netns cookie in the `cgroup_skb` guard). Where the kernel
//! publishes its BTF, the socket hooks read the task's cgroup id (and
//! `sock_create` its namespace's cookie) through `bpf_get_current_task_btf`
//! and the offsets the loader finds there (see `policy::CurrentTask`;
//! verified on 6.18); without BTF they call the helpers above.
#![no_std]
#![no_main]
// For `core::intrinsics::atomic_xadd`: the counters' atomic add (see
// `counters`). The crate builds with nightly anyway (`-Z build-std`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod addr;
mod cgroup_naming;
mod choice;
mod counters;
mod dns;
mod exclude;
mod guard;
mod maps;
mod packet_guard;
mod policy;
mod sockopt;
mod strict;
mod tcp_health;

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::generated::bpf_bind,
    macros::{
        cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sockopt, classifier, raw_tracepoint,
        sock_ops,
    },
    programs::{
        RawTracePointContext, SkBuffContext, SockAddrContext, SockContext, SockOpsContext,
        SockoptContext, TcContext,
    },
};
use mif_common::{api::SOL_MIF, pvd_from_mark, Policy, Pvd, Settings, COUNTER_NO_PVD, NO_PVD};

use crate::{
    addr::{
        is_loopback4, is_loopback6, is_v4_mapped, write_ip6, SockaddrIn6, AF_INET, AF_INET6,
        SOCK_RAW,
    },
    counters::{count, Event},
    dns::Dns,
    maps::pvd,
    policy::{find_policy, in_managed_netns, settings, CurrentTask},
};

/// Let the operation go on.
const ALLOW: i32 = 1;
/// Refuse it: socket() / connect() / sendmsg() / bind() / setsockopt() fail
/// with EPERM.
const REFUSE: i32 = 0;

/// Minimum kernel: 4.10 (5.7 for the netns cookie). The kernel runs this
/// hook for AF_INET and AF_INET6 sockets only (inet_create, inet6_create):
/// packet sockets (AF_PACKET) never reach it.
#[cgroup_sock(sock_create)]
pub fn mif_sock_create(ctx: SockContext) -> i32 {
    match try_sock_create(&ctx) {
        Ok(verdict) | Err(verdict) => verdict,
    }
}

fn try_sock_create(ctx: &SockContext) -> Result<i32, i32> {
    let settings = settings();
    let task = CurrentTask::get();
    if !task.creates_in_managed_netns(ctx.sock, &settings) {
        return Ok(ALLOW);
    }
    let sk: *mut bpf_sock = ctx.sock;
    let (family, ty) = unsafe { ((*sk).family, (*sk).type_) };
    if family != AF_INET && family != AF_INET6 {
        return Ok(ALLOW);
    }
    let Some(policy) = task.policy(settings.attach_level) else {
        return Ok(ALLOW);
    };
    // Raw IP sockets choose their protocol, and with IP_HDRINCL their whole
    // header (source included): a mark holds their route, nothing more.
    if policy.denies_raw() && ty == SOCK_RAW {
        count(policy.id, COUNTER_NO_PVD, Event::Denied);
        return Ok(REFUSE);
    }
    let want_v6 = family == AF_INET6;

    // Two rounds over the preference list: the first passes over PvDs that
    // validation found captive or failing, the second (non-strict policies
    // only, whose PvDs are then all degraded or unavailable) takes the
    // first available one. A strict policy has one round that ignores
    // validation: its admin asked for those networks only, and a portal
    // must stay reachable to log in.
    let mut round = if policy.is_strict() { 1 } else { 0 };
    while round < 2 {
        let healthy_only = round == 0;
        let mut rank = 0;
        while rank < policy.prefer.len() {
            let index = policy.prefer[rank];
            if index == NO_PVD {
                break;
            }
            if let Some(pvd) = pvd(u32::from(index)) {
                if pvd.choosable(want_v6, healthy_only) {
                    unsafe {
                        (*sk).mark = pvd.mark;
                        if policy.binds_device() {
                            (*sk).bound_dev_if = pvd.ifindex;
                        }
                    }
                    if let Some(slot) = counters::slot(policy.id, u32::from(index)) {
                        counters::bump(slot, Event::Steered);
                        if rank > 0 {
                            counters::bump(slot, Event::Fallback);
                        }
                    }
                    return Ok(ALLOW);
                }
            }
            rank += 1;
        }
        round += 1;
    }

    if policy.is_strict() {
        count(policy.id, COUNTER_NO_PVD, Event::Refused);
        Ok(REFUSE)
    } else {
        count(policy.id, COUNTER_NO_PVD, Event::Unsteered);
        Ok(ALLOW)
    }
}

/// How a hook gives a steered socket its PvD's source, which decides what
/// counts as the application's own choice (left alone).
#[derive(Clone, Copy)]
enum SourceBy {
    /// `connect6` binds the socket itself (`bpf_bind`, port 0); `connect4`
    /// leaves the source to the PvD's routes, and judges like `connect6`
    /// (the exclusions apply to the same sockets). The kernel cannot bind
    /// a socket that already has a port, and connect() gives one only
    /// after these hooks (`inet_autobind` follows `pre_connect`): a port
    /// here is the application's own bind, even with the wildcard address
    /// (`bind(0.0.0.0:5353)`).
    Bind,
    /// `sendmsg4/6` set one datagram's source (`msg_src_ip4/6`) and leave
    /// the socket as it is. Every socket has a port by then: the kernel
    /// autobinds one before the hook runs (inet_sendmsg → inet_send_prepare
    /// → inet_autobind, then udp_sendmsg runs the hook), so a port says
    /// nothing about the application. Only a bound address is its choice.
    Datagram,
}

impl SourceBy {
    /// Whether the application chose the source of a socket bound to
    /// `port`, `src4` and `src6` (zero when not bound).
    #[inline(always)]
    fn app_chose(self, port: u32, src4: u32, src6: &[u32; 4]) -> bool {
        let address = src4 != 0 || *src6 != [0; 4];
        match self {
            SourceBy::Bind => address || port != 0,
            SourceBy::Datagram => address,
        }
    }
}

/// A socket of the managed namespace that carries one of mif's PvD marks,
/// as the connect and sendmsg hooks see it: its PvD and the current
/// process's policy, found once per hook for everything the hook does with
/// it (DNS redirection, the source, exclusions, counters), so unmarked
/// sockets pay no walk. (Until 2026-12-02 the DNS check and the source each
/// held a copy of the walk; until 2026-12-02 (later) each also asked the
/// socket's namespace and its PvD again.) A socket whose source the
/// application chose walks too, though only a query would need it: walking
/// only for `steered || port 53` gave the verifier both paths to explore
/// and doubled these programs' verification (about +120 ms of start-up),
/// for a walk (a helper call and a lookup) on such sockets.
pub struct Marked {
    sk: *mut bpf_sock,
    pub index: u32,
    pub pvd: &'static Pvd,
    pub policy: Option<&'static Policy>,
}

impl Marked {
    #[inline(always)]
    fn of(sa: *mut bpf_sock_addr, settings: &Settings) -> Option<Marked> {
        if !in_managed_netns(sa, settings) {
            return None;
        }
        let sk = unsafe { (*sa).__bindgen_anon_1.sk };
        if sk.is_null() {
            return None;
        }
        let index = pvd_from_mark(
            unsafe { (*sk).mark },
            settings.mark_mask,
            settings.mark_shift,
        )?;
        let pvd = pvd(index)?;
        Some(Marked {
            sk,
            index,
            pvd,
            policy: find_policy(settings.attach_level),
        })
    }

    /// The address the socket is bound to, IPv4 and IPv6 (zero if none).
    #[inline(always)]
    pub fn bound_to(&self) -> (u32, [u32; 4]) {
        unsafe { ((*self.sk).src_ip4, (*self.sk).src_ip6) }
    }

    /// Whether the socket's source is still mif's to set `by` the calling
    /// hook (the application chose none).
    #[inline(always)]
    fn source_is_ours(&self, by: SourceBy) -> bool {
        let (port, (src4, src6)) = (unsafe { (*self.sk).src_port }, self.bound_to());
        !by.app_chose(port, src4, &src6)
    }

    /// The policy's id for the counters (`u32::MAX`: a socket whose
    /// process has no policy, steered by another's or chosen).
    #[inline(always)]
    fn policy_id(&self) -> u32 {
        self.policy.map_or(u32::MAX, |p| p.id)
    }
}

/// The marked socket behind `sa` whose source is still mif's to set `by`
/// the calling hook.
#[inline(always)]
fn steered(marked: &Option<Marked>, by: SourceBy) -> Option<&Marked> {
    marked.as_ref().filter(|m| m.source_is_ours(by))
}

/// Takes a steered socket off its PvD at connect() when its policy
/// excludes the destination (`dst`, IPv6 form), leaving it to the main
/// table; whether it did.
#[inline(always)]
fn exclude_at_connect(
    sa: *mut bpf_sock_addr,
    settings: &Settings,
    marked: &Marked,
    dst: &[u32; 4],
) -> bool {
    let Some(p) = marked.policy else {
        return false;
    };
    if !exclude::excludes(p, dst) {
        return false;
    }
    exclude::unsteer(sa, settings, p);
    count(p.id, marked.index, Event::Excluded);
    true
}

/// Minimum kernel: 4.17 (5.7 for the netns cookie; 6.0 for SO_BINDTOIFINDEX
/// in `bpf_setsockopt`, used by exclusions of `bind = "device"` policies).
#[cgroup_sock_addr(connect4)]
pub fn mif_connect4(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    if exclude::escapes(
        ctx.sock_addr,
        &settings,
        &exclude::mapped4(unsafe { (*ctx.sock_addr).user_ip4 }),
    ) {
        return REFUSE;
    }
    // Before the source bind: a redirected stub query (127.0.0.53) is no
    // longer a loopback destination and gets the PvD's source like any.
    let sa = ctx.sock_addr;
    let marked = Marked::of(sa, &settings);
    if dns::redirect4(sa, marked.as_ref()) == Dns::Refuse {
        return REFUSE;
    }
    let Some(m) = steered(&marked, SourceBy::Bind) else {
        return ALLOW;
    };
    let dst = unsafe { (*sa).user_ip4 };
    if m.pvd.addr4 == 0 || is_loopback4(dst) {
        return ALLOW;
    }
    if !exclude_at_connect(sa, &settings, m, &exclude::mapped4(dst)) {
        // No bind: every IPv4 route of the PvD's table names the PvD's
        // address as its source (`src`, the daemon's `route_source4`), and
        // the mark selects that table in this connect()'s own route
        // lookup, which takes the route's source for a socket bound to
        // none. A `bpf_bind` here cost 280 of this program's 663 ns (the
        // kernel's bind checks the address in the local table again).
        count(m.policy_id(), m.index, Event::Bound);
    }
    ALLOW
}

/// Minimum kernel: 4.17 (5.7 for the netns cookie; 6.0 as connect4).
#[cgroup_sock_addr(connect6)]
pub fn mif_connect6(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let sa = ctx.sock_addr;
    let dst = unsafe { (*sa).user_ip6 };
    if strict::is_link_scoped6(&dst) && strict::refuses(sa, &settings, |_| true) {
        return REFUSE;
    }
    if exclude::escapes(sa, &settings, &dst) {
        return REFUSE;
    }
    let marked = Marked::of(sa, &settings);
    if dns::redirect6(sa, marked.as_ref()) == Dns::Refuse {
        return REFUSE;
    }
    let dst = unsafe { (*sa).user_ip6 };
    let Some(m) = steered(&marked, SourceBy::Bind) else {
        return ALLOW;
    };
    // v4-mapped destinations leave by IPv4; an IPv6 source cannot be bound for them.
    if m.pvd.addr6 == [0; 4] || is_loopback6(&dst) || is_v4_mapped(&dst) {
        return ALLOW;
    }
    if exclude_at_connect(sa, &settings, m, &dst) {
        return ALLOW;
    }
    // IPv6 routes carry no source (see `route_source4`): bound here.
    let mut bind_addr = SockaddrIn6::new(m.pvd.addr6);
    let len = core::mem::size_of::<SockaddrIn6>() as i32;
    if unsafe { bpf_bind(sa, (&raw mut bind_addr).cast(), len) } == 0 {
        count(m.policy_id(), m.index, Event::Bound);
    }
    ALLOW
}

/// Minimum kernel: 4.18 (5.7 for the netns cookie).
#[cgroup_sock_addr(sendmsg4)]
pub fn mif_sendmsg4(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let sa = ctx.sock_addr;
    // A source chosen per datagram (IP_PKTINFO) is a bind in all but name.
    // A bound socket's own address arrives here too: its bind was judged.
    let src = unsafe { (*sa).msg_src_ip4 };
    if src != 0
        && src != strict::bound_source(sa).0
        && strict::refuses(sa, &settings, |p| !strict::may_bind4(p, src))
    {
        return REFUSE;
    }
    if exclude::escapes(sa, &settings, &exclude::mapped4(unsafe { (*sa).user_ip4 })) {
        return REFUSE;
    }
    let marked = Marked::of(sa, &settings);
    if dns::redirect4(sa, marked.as_ref()) == Dns::Refuse {
        return REFUSE;
    }
    let Some(m) = steered(&marked, SourceBy::Datagram) else {
        return ALLOW;
    };
    unsafe {
        // A source the application chose (IP_PKTINFO) stays.
        if m.pvd.addr4 == 0 || (*sa).msg_src_ip4 != 0 || is_loopback4((*sa).user_ip4) {
            return ALLOW;
        }
        (*sa).msg_src_ip4 = m.pvd.addr4;
    }
    count(m.policy_id(), m.index, Event::SourceSet);
    ALLOW
}

/// Minimum kernel: 4.18 (5.7 for the netns cookie).
#[cgroup_sock_addr(sendmsg6)]
pub fn mif_sendmsg6(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let sa = ctx.sock_addr;
    let (dst, src) = unsafe { ((*sa).user_ip6, (*sa).msg_src_ip6) };
    if (strict::is_link_scoped6(&dst) || (src != [0; 4] && src != strict::bound_source(sa).1))
        && strict::refuses(sa, &settings, |p| {
            strict::is_link_scoped6(&dst) || !strict::may_bind6(p, &src)
        })
    {
        return REFUSE;
    }
    if exclude::escapes(sa, &settings, &dst) {
        return REFUSE;
    }
    let marked = Marked::of(sa, &settings);
    if dns::redirect6(sa, marked.as_ref()) == Dns::Refuse {
        return REFUSE;
    }
    let Some(m) = steered(&marked, SourceBy::Datagram) else {
        return ALLOW;
    };
    unsafe {
        let dst = (*sa).user_ip6;
        if m.pvd.addr6 == [0; 4]
            || (*sa).msg_src_ip6 != [0; 4]
            || is_loopback6(&dst)
            || is_v4_mapped(&dst)
        {
            return ALLOW;
        }
        write_ip6(&raw mut (*sa).msg_src_ip6, &m.pvd.addr6);
    }
    count(m.policy_id(), m.index, Event::SourceSet);
    ALLOW
}

/// Minimum kernel: 4.17 (5.7 for the netns cookie).
#[cgroup_sock_addr(bind4)]
pub fn mif_bind4(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let sa = ctx.sock_addr;
    let addr = unsafe { (*sa).user_ip4 };
    // Wildcard binds (servers) are the common case: decided before the walk.
    if addr == 0 || is_loopback4(addr) {
        return ALLOW;
    }
    if strict::refuses(sa, &settings, |p| !strict::may_bind4(p, addr)) {
        return REFUSE;
    }
    ALLOW
}

/// Minimum kernel: 4.17 (5.7 for the netns cookie).
#[cgroup_sock_addr(bind6)]
pub fn mif_bind6(ctx: SockAddrContext) -> i32 {
    let settings = settings();
    let sa = ctx.sock_addr;
    let addr = unsafe { (*sa).user_ip6 };
    if addr == [0; 4] || is_loopback6(&addr) {
        return ALLOW;
    }
    if strict::refuses(sa, &settings, |p| !strict::may_bind6(p, &addr)) {
        return REFUSE;
    }
    ALLOW
}

/// Minimum kernel: 5.3 (6.0 for the cgroup walk in sockopt programs; 5.18
/// for `bpf_set_retval`, the errors of the MIF API's `SOL_MIF`).
#[cgroup_sockopt(setsockopt)]
pub fn mif_setsockopt(ctx: SockoptContext) -> i32 {
    let so = ctx.sockopt;
    let settings = settings();
    if unsafe { (*so).level } == SOL_MIF {
        return choice::answer(so, choice::set(so, &settings));
    }
    if strict::refuses_sockopt(so) && strict::refuses(so, &settings, |_| true) {
        return REFUSE;
    }
    sockopt::pass_through(so);
    ALLOW
}

/// Minimum kernel: 5.3 (5.19 for an errno other than the kernel's in
/// `retval`). Runs after the kernel's handler: only `SOL_MIF`, which it
/// answered `ENOPROTOOPT`, is changed; every other answer is left as the
/// kernel (or a program before this one) gave it.
#[cgroup_sockopt(getsockopt)]
pub fn mif_getsockopt(ctx: SockoptContext) -> i32 {
    let so = ctx.sockopt;
    if unsafe { (*so).level } == SOL_MIF {
        choice::get(so, &settings());
    } else {
        sockopt::pass_through(so);
    }
    ALLOW
}

/// Minimum kernel: 5.2. Replies to a redirected DNS query show the server
/// the application asked. recvmsg programs must allow.
#[cgroup_sock_addr(recvmsg4)]
pub fn mif_recvmsg4(ctx: SockAddrContext) -> i32 {
    dns::unredirect4(ctx.sock_addr);
    ALLOW
}

/// Minimum kernel: 5.2.
#[cgroup_sock_addr(recvmsg6)]
pub fn mif_recvmsg6(ctx: SockAddrContext) -> i32 {
    dns::unredirect6(ctx.sock_addr);
    ALLOW
}

/// Minimum kernel: 5.8. `getpeername()` of a redirected DNS socket (TCP, or
/// connected UDP) shows the server the application asked.
#[cgroup_sock_addr(getpeername4)]
pub fn mif_getpeer4(ctx: SockAddrContext) -> i32 {
    dns::unredirect4(ctx.sock_addr);
    ALLOW
}

/// Minimum kernel: 5.8.
#[cgroup_sock_addr(getpeername6)]
pub fn mif_getpeer6(ctx: SockAddrContext) -> i32 {
    dns::unredirect6(ctx.sock_addr);
    ALLOW
}

/// Minimum kernel: 6.15 (the hook is 4.10, `bpf_skb_ancestor_cgroup_id`
/// in it 5.7, `bpf_get_netns_cookie` in it 6.15). Drops (0) packets of
/// strict sockets leaving by an interface that is none of their PvDs'.
#[cgroup_skb(egress)]
pub fn mif_guard(ctx: SkBuffContext) -> i32 {
    guard::egress(&ctx, &settings())
}

/// Minimum kernel: 6.6 (tcx links; `bpf_get_netns_cookie` in tc programs
/// 6.15, as in the egress guard). Drops frames of strict policies' packet
/// sockets leaving by an interface that is none of their PvDs'.
#[classifier]
pub fn mif_pkt_guard(ctx: TcContext) -> i32 {
    packet_guard::egress(&ctx, &settings())
}

/// Minimum kernel: 5.15 (see [`tcp_health`]). Attached with the hooks; the
/// return value is the kernel's to ignore for the callbacks this program
/// acts on, and 1 leaves any reply another program gave as it is.
#[sock_ops]
pub fn mif_tcp_health(ctx: SockOpsContext) -> u32 {
    tcp_health::on_op(&ctx, &settings());
    1
}

#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn mif_cg_mkdir(ctx: RawTracePointContext) -> i32 {
    cgroup_naming::on_mkdir(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "cgroup_rmdir")]
pub fn mif_cg_rmdir(ctx: RawTracePointContext) -> i32 {
    cgroup_naming::on_rmdir(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
