//! Types shared by mif's kernel programs (`mif-ebpf`) and its userspace (`mif`).
//!
//! Every type here is a map key or value: `#[repr(C)]`, padding spelled out
//! as named fields so that both sides agree byte for byte and the verifier
//! never sees uninitialised stack. Changing any layout here requires bumping
//! [`LAYOUT_VERSION`], which versions the pin directory so an old daemon's
//! pinned maps are never reopened with a new layout.
#![no_std]

/// Version of the map layouts and program semantics. Part of the pin path.
pub const LAYOUT_VERSION: u32 = 8;

/// Most PvDs one instance manages (PvD indices are below it).
pub const MAX_PVDS: u32 = 64;
/// Most PvDs one policy may list in its preference order.
pub const MAX_PREFER: usize = 8;
/// Most policies (cgroups with a policy) one instance holds.
pub const MAX_POLICIES: u32 = 131_072;
/// Most (policy, PvD) counter slots.
pub const MAX_COUNTERS: u32 = 262_144;
/// Most (policy, prefix) exclusions one instance holds.
pub const MAX_EXCLUDES: u32 = 16_384;
/// Deepest cgroup level the policy walk looks at. cgroup trees on real hosts
/// (systemd slices, kubepods) are under 10 levels deep.
pub const MAX_CGROUP_DEPTH: u32 = 32;
/// Most selectors (`unit`, `app`, `user` policies) the kernel matches at
/// cgroup creation ([`names::MAP_SELECTORS`]).
pub const MAX_SELECTORS: u32 = 4096;
/// Longest name a [`SelectorKey`] holds; longer ones are matched by the
/// daemon's watcher only.
pub const SELECTOR_NAME_MAX: usize = 127;

/// Names of the maps and programs, as the kernel and the pin directory know them.
/// The kernel cuts object names to 15 characters: keep them short.
pub mod names {
    pub const MAP_POLICIES: &str = "MIF_POLICIES";
    pub const MAP_PVDS: &str = "MIF_PVDS";
    pub const MAP_PVD_LIVE: &str = "MIF_PVD_LIVE";
    pub const MAP_COUNTERS: &str = "MIF_COUNTERS";
    pub const MAP_PVD_META: &str = "MIF_PVD_META";
    pub const MAP_INSTANCE: &str = "MIF_INSTANCE";
    /// Socket cookie → the DNS server the application asked, for redirected
    /// DNS sockets (what recvmsg and getpeername report back).
    pub const MAP_DNS_NAT: &str = "MIF_DNS_NAT";
    /// One entry: the daemon's DNS forwarder, when per-domain selection is on.
    pub const MAP_DNS_FWD: &str = "MIF_DNS_FWD";
    /// (policy id, destination prefix) → excluded: destinations a policy's
    /// sockets reach by the main table (`exclude`), a longest-prefix trie.
    pub const MAP_EXCLUDE: &str = "MIF_EXCLUDE";
    /// The guards' drops as they happen ([`crate::GuardDrop`] records, a
    /// ring buffer), for the daemon's rate-limited log.
    pub const MAP_GUARD_LOG: &str = "MIF_GUARD_LOG";
    /// Retransmission timeouts of connections on PvDs as they happen
    /// ([`crate::TcpTrouble`] records, a ring buffer), for the daemon.
    pub const MAP_TCP_TROUBLE: &str = "MIF_TCP_TROUBLE";
    /// One `u64`: the [`MAP_TCP_TROUBLE`] records lost to a full ring.
    pub const MAP_TCP_LOST: &str = "MIF_TCP_LOST";
    /// Selector → policy ([`crate::SelectorKey`] → [`crate::Policy`]): what
    /// the kernel gives a cgroup the moment it is made, by its name.
    pub const MAP_SELECTORS: &str = "MIF_SELECTORS";
    /// One entry: where in the kernel's structures a new cgroup's id, name,
    /// hierarchy and ancestors are, and which cgroup is the attach cgroup
    /// ([`crate::CgroupNaming`]).
    pub const MAP_CG_NAMING: &str = "MIF_CG_NAMING";
    /// The cgroup watchers' working memory (one slot per CPU).
    pub const MAP_CG_SCRATCH: &str = "MIF_CG_SCRATCH";
    /// PvD name (NUL-padded, [`crate::PVD_NAME_LEN`] bytes) → PvD index:
    /// the PvD an application chooses by name ([`crate::api`]).
    pub const MAP_PVD_NAMES: &str = "MIF_PVD_NAMES";
    /// All maps, as pinned in the pin directory.
    pub const MAPS: [&str; 16] = [
        MAP_PVD_NAMES,
        MAP_SELECTORS,
        MAP_CG_NAMING,
        MAP_CG_SCRATCH,
        MAP_EXCLUDE,
        MAP_GUARD_LOG,
        MAP_TCP_TROUBLE,
        MAP_TCP_LOST,
        MAP_DNS_FWD,
        MAP_POLICIES,
        MAP_PVDS,
        MAP_PVD_LIVE,
        MAP_COUNTERS,
        MAP_PVD_META,
        MAP_INSTANCE,
        MAP_DNS_NAT,
    ];
    pub const PROG_SOCK_CREATE: &str = "mif_sock_create";
    pub const PROG_CONNECT4: &str = "mif_connect4";
    pub const PROG_CONNECT6: &str = "mif_connect6";
    pub const PROG_SENDMSG4: &str = "mif_sendmsg4";
    pub const PROG_SENDMSG6: &str = "mif_sendmsg6";
    pub const PROG_BIND4: &str = "mif_bind4";
    pub const PROG_BIND6: &str = "mif_bind6";
    pub const PROG_SETSOCKOPT: &str = "mif_setsockopt";
    /// Answers `getsockopt(SOL_MIF, MIF_PVD)` (see [`crate::api`]).
    pub const PROG_GETSOCKOPT: &str = "mif_getsockopt";
    pub const PROG_RECVMSG4: &str = "mif_recvmsg4";
    pub const PROG_RECVMSG6: &str = "mif_recvmsg6";
    pub const PROG_GETPEER4: &str = "mif_getpeer4";
    pub const PROG_GETPEER6: &str = "mif_getpeer6";
    /// The per-packet egress guard of strict policies (`cgroup_skb/egress`).
    pub const PROG_GUARD: &str = "mif_guard";
    /// The packet guard of strict policies (tc egress, for packet sockets).
    pub const PROG_PKT_GUARD: &str = "mif_pkt_guard";
    /// Retransmission timeouts of connections on PvDs (`sock_ops`).
    pub const PROG_TCP_HEALTH: &str = "mif_tcp_health";
    /// Gives a new cgroup its selector's policy as it is made (raw
    /// tracepoint `cgroup_mkdir`).
    pub const PROG_CG_MKDIR: &str = "mif_cg_mkdir";
    /// Drops a removed cgroup's policy entry (raw tracepoint `cgroup_rmdir`).
    pub const PROG_CG_RMDIR: &str = "mif_cg_rmdir";
    /// The hooks, attached once to the attach cgroup, in attach order. The
    /// reverse translations of DNS redirection (recvmsg, getpeername) come
    /// before the programs that redirect, so no redirected reply is ever
    /// seen untranslated; the strict-mode checks (bind, setsockopt) come
    /// last: until they are attached, strict sockets are only as protected
    /// as before (the per-socket choice of [`crate::api`] is served by the
    /// setsockopt program too, and its answer by the getsockopt one). The
    /// TCP health watch steers nothing and comes after all.
    pub const HOOKS: [&str; 14] = [
        PROG_RECVMSG4,
        PROG_RECVMSG6,
        PROG_GETPEER4,
        PROG_GETPEER6,
        PROG_SOCK_CREATE,
        PROG_CONNECT4,
        PROG_CONNECT6,
        PROG_SENDMSG4,
        PROG_SENDMSG6,
        PROG_BIND4,
        PROG_BIND6,
        PROG_SETSOCKOPT,
        PROG_GETSOCKOPT,
        PROG_TCP_HEALTH,
    ];
    /// The hooks that serve one feature of policies only, attached when a
    /// policy first uses it (and kept until the daemon stops): DNS
    /// redirection's reverse translations (`dns = "pvd"`) and strict
    /// policies' bind checks. While no policy uses them they cost nothing,
    /// not even at a `recvmsg` of an unsteered application; and each hook
    /// attached costs the kernel a walk over every cgroup below the attach
    /// cgroup (a sixth of a start with 100,000 cgroups for these six).
    pub const ON_DEMAND_HOOKS: [&str; 6] = [
        PROG_RECVMSG4,
        PROG_RECVMSG6,
        PROG_GETPEER4,
        PROG_GETPEER6,
        PROG_BIND4,
        PROG_BIND6,
    ];
    /// The strict policies' guards, attached where strict policies need
    /// them instead (each strict policy's cgroup, the namespace's
    /// interfaces while there are strict policies): nothing else pays.
    pub const GUARDS: [&str; 2] = [PROG_GUARD, PROG_PKT_GUARD];
    /// The cgroup watchers: host-wide tracepoints, attached after the
    /// hooks, that give cgroups made below the attach cgroup their
    /// selector's policy before any process can be moved in.
    pub const CGROUP_WATCHERS: [&str; 2] = [PROG_CG_MKDIR, PROG_CG_RMDIR];
    /// Every program in the object: the hooks, the guards, the watchers.
    pub const PROGRAMS: [&str; HOOKS.len() + GUARDS.len() + CGROUP_WATCHERS.len()] = {
        let mut all = [""; HOOKS.len() + GUARDS.len() + CGROUP_WATCHERS.len()];
        let mut i = 0;
        while i < HOOKS.len() {
            all[i] = HOOKS[i];
            i += 1;
        }
        while i < HOOKS.len() + GUARDS.len() {
            all[i] = GUARDS[i - HOOKS.len()];
            i += 1;
        }
        while i < all.len() {
            all[i] = CGROUP_WATCHERS[i - HOOKS.len() - GUARDS.len()];
            i += 1;
        }
        all
    };
    /// Globals set at load time.
    pub const GLOBAL_SETTINGS: &str = "MIF_SETTINGS";
    pub const GLOBAL_TASK_LAYOUT: &str = "MIF_TASK_LAYOUT";
}

/// Load-time settings of one instance, a read-only global of the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Network namespace cookie of the namespace this instance steers; sockets
    /// created in any other namespace are left alone.
    pub netns_cookie: u64,
    /// Bits of the socket mark that belong to mif.
    pub mark_mask: u32,
    /// Position of the lowest bit of `mark_mask` (mark = (pvd + 1) << shift).
    pub mark_shift: u32,
    /// Level of the cgroup the programs are attached to; the policy walk stops there.
    pub attach_level: u32,
    pub _pad: u32,
    /// Id of the cgroup the programs are attached to (for `mif maps`, which
    /// checks the programs really are attached there).
    pub attach_cgroup_id: u64,
}

/// Where the running kernel keeps what the socket hooks read of the current
/// task (from its BTF, at load), a read-only global of the programs: with
/// it they read the task's cgroup id and, in `sock_create`, its namespace's
/// cookie with a few loads instead of a helper call each. All zero (no BTF,
/// or a field missing) means "use the helpers"; the choice is a constant
/// the verifier folds, so only one path is loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskLayout {
    /// Non-zero when every offset below is the kernel's.
    pub ready: u32,
    /// `offsetof(struct task_struct, cgroups)`.
    pub task_cgroups: u32,
    /// `offsetof(struct css_set, dfl_cgrp)`.
    pub css_set_dfl_cgrp: u32,
    /// `offsetof(struct cgroup, kn)`.
    pub cgroup_kn: u32,
    /// `offsetof(struct kernfs_node, id)`.
    pub kn_id: u32,
    /// `offsetof(struct task_struct, nsproxy)`.
    pub task_nsproxy: u32,
    /// `offsetof(struct nsproxy, net_ns)`.
    pub nsproxy_net_ns: u32,
    /// `offsetof(struct net, net_cookie)`.
    pub net_cookie: u32,
}

/// Policy flag: refuse the socket when no preferred PvD is available.
pub const POLICY_STRICT: u8 = 1 << 0;
/// Policy flag: also bind the socket to the PvD's interface (`SO_BINDTODEVICE`).
pub const POLICY_BIND_DEVICE: u8 = 1 << 1;
/// Policy flag: refuse raw IP sockets (`SOCK_RAW`), which can write any
/// header. (Packet sockets never reach the `sock_create` hook.)
pub const POLICY_DENY_RAW: u8 = 1 << 2;
/// Policy flag: DNS queries (port 53, UDP and TCP) go to the resolvers of
/// the socket's PvD, whatever server the application asked.
pub const POLICY_DNS_PVD: u8 = 1 << 3;

/// Policy flag: the policy has destinations that keep the main table's
/// route (`exclude`): connect() consults [`names::MAP_EXCLUDE`].
pub const POLICY_EXCLUDES: u8 = 1 << 4;

/// The data of an [`names::MAP_EXCLUDE`] key (the trie's key is this behind
/// a prefix length in bits): the policy id, then the destination in IPv6
/// form (IPv4 v4-mapped), so one trie holds every policy's prefixes of both
/// families and a lookup never crosses policies (the id's 32 bits are
/// always part of the prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExcludeKey {
    /// Always wholly inside the prefix, so its byte order does not matter.
    pub policy: u32,
    pub addr: [u8; 16],
}

impl ExcludeKey {
    /// Bits of the trie prefix for an address prefix of `len` bits.
    pub const fn prefix_bits(len: u32, v4: bool) -> u32 {
        32 + if v4 { 96 + len } else { len }
    }
}

/// The DNS port, in network byte order as `user_port` holds it.
pub const DNS_PORT_BE: u32 = 53u16.to_be() as u32;

/// The MIF API's socket option: an application chooses the PvD of one of
/// its sockets, without privileges, with
/// `setsockopt(fd, SOL_MIF, MIF_PVD, "wwan0", 5)`, and reads the PvD a
/// socket uses with `getsockopt(fd, SOL_MIF, MIF_PVD, buf, &len)`. The
/// kernel knows no such level: mif's setsockopt and getsockopt programs
/// serve it before (set) and after (get) the kernel's handler, which
/// answers `ENOPROTOOPT` where mif is not running.
pub mod api {
    /// "mif" in ASCII: far from the kernel's levels (`SOL_*` < 300).
    pub const SOL_MIF: i32 = 0x6d6966;
    /// The option: the PvD's name, NUL-terminated or not, at most
    /// [`crate::PVD_NAME_LEN`] - 1 bytes.
    pub const MIF_PVD: i32 = 1;
}

/// Socket options that strict policies refuse (uapi numbers; options are
/// numbered per level).
pub mod sockopt {
    pub const SOL_IP: i32 = 0;
    pub const SOL_SOCKET: i32 = 1;
    pub const SOL_IPV6: i32 = 41;
    pub const SOL_PACKET: i32 = 263;
    pub const SOL_XDP: i32 = 283;

    pub const SO_DONTROUTE: i32 = 5;
    pub const SO_BINDTODEVICE: i32 = 25;
    pub const SO_MARK: i32 = 36;
    pub const SO_BINDTOIFINDEX: i32 = 62;

    pub const IP_MULTICAST_IF: i32 = 32;
    pub const IP_ADD_MEMBERSHIP: i32 = 35;
    pub const IP_ADD_SOURCE_MEMBERSHIP: i32 = 39;
    pub const IP_UNICAST_IF: i32 = 50;

    pub const IPV6_MULTICAST_IF: i32 = 17;
    pub const IPV6_ADD_MEMBERSHIP: i32 = 20;
    pub const IPV6_PKTINFO: i32 = 50;
    pub const IPV6_UNICAST_IF: i32 = 76;

    /// A packet socket's sends go past tc (`dev_direct_xmit`), where the
    /// packet guard runs.
    pub const PACKET_QDISC_BYPASS: i32 = 20;

    /// At both SOL_IP and SOL_IPV6.
    pub const MCAST_JOIN_GROUP: i32 = 42;
    pub const MCAST_JOIN_SOURCE_GROUP: i32 = 46;

    /// Whether setting `(level, optname)` can put a socket's packets (or
    /// packets the kernel sends for it) elsewhere than its mark says:
    ///
    /// - an output interface: `SO_BINDTODEVICE`, `SO_BINDTOIFINDEX`,
    ///   `IP_UNICAST_IF`, `IPV6_UNICAST_IF`, the multicast interfaces, and
    ///   a sticky `IPV6_PKTINFO`. With one, IPv4 sends even when the PvD's
    ///   table has no route through it (the destination is then assumed
    ///   on-link), and IPv6 finds its route in the main table;
    /// - another mark (`SO_MARK`): another table, or none;
    /// - `SO_DONTROUTE`: a link-scope lookup, which the PvD's table answers
    ///   only for its own link, so the main table's on-link routes of other
    ///   networks answer the rest;
    /// - joining a multicast group: the kernel reports the membership (IGMP,
    ///   MLD) on the interface named, or else the one the main table gives
    ///   for the group;
    /// - what sends frames past tc, where the packet guard holds packet
    ///   sockets: `PACKET_QDISC_BYPASS`, and every `AF_XDP` option (an
    ///   `AF_XDP` socket cannot send before its rings are set).
    pub const fn moves_off_pvd(level: i32, optname: i32) -> bool {
        matches!(
            (level, optname),
            (
                SOL_SOCKET,
                SO_DONTROUTE | SO_MARK | SO_BINDTODEVICE | SO_BINDTOIFINDEX
            ) | (
                SOL_IP,
                IP_UNICAST_IF
                    | IP_MULTICAST_IF
                    | IP_ADD_MEMBERSHIP
                    | IP_ADD_SOURCE_MEMBERSHIP
                    | MCAST_JOIN_GROUP
                    | MCAST_JOIN_SOURCE_GROUP
            ) | (
                SOL_IPV6,
                IPV6_UNICAST_IF
                    | IPV6_MULTICAST_IF
                    | IPV6_PKTINFO
                    | IPV6_ADD_MEMBERSHIP
                    | MCAST_JOIN_GROUP
                    | MCAST_JOIN_SOURCE_GROUP
            ) | (SOL_PACKET, PACKET_QDISC_BYPASS)
                | (SOL_XDP, _)
        )
    }
}

/// [`SelectorKey::kind`] of a `unit` selector: the cgroup's own name.
pub const SELECTOR_UNIT: u8 = 1;
/// [`SelectorKey::kind`] of a `user` selector: the name of a cgroup whose
/// parent is `user.slice` (`user-1000.slice`).
pub const SELECTOR_USER: u8 = 2;
/// [`SelectorKey::kind`] of an `app` selector: the application id in the
/// cgroup's name, as systemd's desktop naming puts it there (escaped).
pub const SELECTOR_APP: u8 = 3;

/// Key of [`names::MAP_SELECTORS`]: a kind and a name, zero-padded, so the
/// kernel finds a new cgroup's selector with one lookup per kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SelectorKey {
    pub kind: u8,
    pub name: [u8; SELECTOR_NAME_MAX],
}

impl SelectorKey {
    /// The key of `name` for `kind`; `None` when the name is empty or
    /// longer than [`SELECTOR_NAME_MAX`].
    pub fn new(kind: u8, name: &[u8]) -> Option<Self> {
        if name.is_empty() || name.len() > SELECTOR_NAME_MAX {
            return None;
        }
        let mut key = Self {
            kind,
            name: [0; SELECTOR_NAME_MAX],
        };
        key.name[..name.len()].copy_from_slice(name);
        Some(key)
    }

    /// The name, without its padding.
    pub fn name(&self) -> &[u8] {
        let len = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SELECTOR_NAME_MAX);
        &self.name[..len]
    }
}

/// The one entry of [`names::MAP_CG_NAMING`], written by the daemon before
/// it attaches the cgroup watchers: what they need to know of a new cgroup
/// that a raw tracepoint's `struct cgroup *` does not tell a program built
/// without the kernel's headers. The offsets come from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupNaming {
    /// Non-zero once written: until then the watchers do nothing.
    pub ready: u32,
    /// `offsetof(struct cgroup, kn)`.
    pub cgroup_kn: u32,
    /// `offsetof(struct cgroup, root)`.
    pub cgroup_root: u32,
    /// `offsetof(struct cgroup, level)`.
    pub cgroup_level: u32,
    /// `offsetof(struct cgroup, ancestors)`: the cgroup at each level
    /// above it (Linux 6.1).
    pub cgroup_ancestors: u32,
    /// `offsetof(struct cgroup_root, hierarchy_id)`: 0 is cgroup2's, the
    /// others are cgroup v1 hierarchies (a hybrid mount has both), whose
    /// ids may equal cgroup2 ids.
    pub root_hierarchy_id: u32,
    /// `offsetof(struct kernfs_node, id)`: the cgroup id.
    pub kn_id: u32,
    /// `offsetof(struct kernfs_node, name)`: the cgroup's name.
    pub kn_name: u32,
    /// `offsetof(struct kernfs_node, __parent)` (`parent` before 6.15).
    pub kn_parent: u32,
    /// The attach cgroup's level: only cgroups below it are matched.
    pub attach_level: u32,
    /// The attach cgroup's id.
    pub attach_id: u64,
}

/// Where PvD `index`'s copy `live` (0 or 1, from [`names::MAP_PVD_LIVE`])
/// sits in [`names::MAP_PVDS`]: two copies per PvD, so that the daemon
/// writes the one no program reads and then flips `live` (one aligned
/// word), and a program never reads a half-written PvD. An array rather
/// than a hash map for the lookup: the verifier inlines an array's into a
/// few instructions, where a hash lookup is a call (30 of `sock_create`'s
/// 288 ns on the bench machine, see docs/benchmarks.md).
pub const fn pvd_copy(index: u32, live: u32) -> u32 {
    index * 2 + (live & 1)
}

/// Slot in `prefer` that lists no PvD.
pub const NO_PVD: u8 = u8::MAX;

/// Value of the policy map, keyed by cgroup id (the cgroup2 directory's inode).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Stable id of the policy, the counters' key.
    pub id: u32,
    /// PvD indices in order of preference; unused slots hold [`NO_PVD`].
    pub prefer: [u8; MAX_PREFER],
    /// `POLICY_*` flags.
    pub flags: u8,
    pub _pad: [u8; 3],
    /// PvDs (bit = PvD index) the policy's processes may also choose for a
    /// socket themselves ([`api::MIF_PVD`]) besides those of `prefer`.
    /// Ignored for strict policies: they may choose among `prefer` only.
    pub allow: u64,
}

impl Policy {
    pub const fn is_strict(&self) -> bool {
        self.flags & POLICY_STRICT != 0
    }
    pub const fn binds_device(&self) -> bool {
        self.flags & POLICY_BIND_DEVICE != 0
    }
    pub const fn denies_raw(&self) -> bool {
        self.flags & POLICY_DENY_RAW != 0
    }
    pub const fn dns_pvd(&self) -> bool {
        self.flags & POLICY_DNS_PVD != 0
    }
    pub const fn has_excludes(&self) -> bool {
        self.flags & POLICY_EXCLUDES != 0
    }

    /// Whether the policy lists the PvD with `index`.
    pub const fn lists(&self, index: u32) -> bool {
        let mut rank = 0;
        while rank < MAX_PREFER {
            let slot = self.prefer[rank];
            if slot == NO_PVD {
                return false;
            }
            if slot as u32 == index {
                return true;
            }
            rank += 1;
        }
        false
    }

    /// Whether a process of this policy may choose the PvD with `index` for
    /// a socket of its own ([`api::MIF_PVD`]): one of `prefer`, or, unless
    /// the policy is strict, one of `allow`. A strict policy's processes
    /// can never leave its PvDs this way.
    pub const fn may_choose(&self, index: u32) -> bool {
        self.lists(index) || (!self.is_strict() && index < 64 && self.allow & (1u64 << index) != 0)
    }

    /// Whether a strict socket of this policy may bind an address owned by
    /// the PvD `owner` ([`NO_OWNER`] when no PvD owns it), available for
    /// the address's family or not. Only the PvD addresses carry `from
    /// <address>` rules, so only binding those can move a socket onto a
    /// network; of those, only the ones the policy lists and that are
    /// available for the family are the policy's own. Wildcard and loopback
    /// binds never reach here.
    ///
    /// Plain integers on purpose: an `Option<(u32, &Pvd)>` parameter made
    /// the kernel reject the object's BTF at every start (a union member at
    /// a non-zero offset), which dropped the verifier's line info.
    pub const fn may_bind(&self, owner: u32, owner_available: bool) -> bool {
        owner == NO_OWNER || (self.lists(owner) && owner_available)
    }
}

/// [`Policy::may_bind`]'s owner of an address no PvD has.
pub const NO_OWNER: u32 = u32::MAX;

/// PvD flag: usable for IPv4 (link up, an IPv4 address and an IPv4 default route).
pub const PVD_AVAIL_V4: u32 = 1 << 0;
/// PvD flag: usable for IPv6.
pub const PVD_AVAIL_V6: u32 = 1 << 1;
/// PvD flag: the PvD has resolvers, but only ones the kernel cannot send a
/// query to directly (link-local: a sock_addr program cannot set the
/// scope); the daemon's forwarder reaches them, so while it is on,
/// queries go there instead of being treated as having no resolver.
pub const PVD_DNS_VIA_FORWARDER: u32 = 1 << 2;
/// PvD flag: validation found the PvD captive or failing for IPv4 (its
/// link, address and gateway are fine, the internet behind them is not).
/// Non-strict policies pass it over while another PvD of theirs is
/// available and not degraded; strict policies ignore it.
pub const PVD_DEGRADED_V4: u32 = 1 << 3;
/// PvD flag: likewise for IPv6.
pub const PVD_DEGRADED_V6: u32 = 1 << 4;

/// Value of the PvD array, indexed by PvD index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pvd {
    /// Socket mark of this PvD (already shifted into the mask).
    pub mark: u32,
    /// Interface index, for hard binds.
    pub ifindex: u32,
    /// `PVD_AVAIL_*` flags.
    pub flags: u32,
    /// Source address for IPv4, network byte order as the kernel keeps it.
    pub addr4: u32,
    /// Source address for IPv6, four words in network byte order.
    pub addr6: [u32; 4],
    /// IPv4 DNS server that `dns = "pvd"` sockets are sent to (the PvD's
    /// first IPv4 one), 0 when it has none.
    pub dns4: u32,
    /// IPv6 DNS server likewise, all zero when none.
    pub dns6: [u32; 4],
}

impl Pvd {
    pub const fn available(&self, family_v6: bool) -> bool {
        let bit = if family_v6 {
            PVD_AVAIL_V6
        } else {
            PVD_AVAIL_V4
        };
        self.flags & bit != 0
    }

    /// Whether validation found the PvD captive or failing for the family.
    pub const fn degraded(&self, family_v6: bool) -> bool {
        let bit = if family_v6 {
            PVD_DEGRADED_V6
        } else {
            PVD_DEGRADED_V4
        };
        self.flags & bit != 0
    }

    /// Whether a socket of the family may be given this PvD: in the first
    /// of the choice's two rounds (`healthy_only`) it must also not be
    /// degraded; the second round, for non-strict policies whose PvDs are
    /// all degraded, takes any available one (an application is better
    /// off trying a captive network than having none).
    pub const fn choosable(&self, family_v6: bool, healthy_only: bool) -> bool {
        self.available(family_v6) && !(healthy_only && self.degraded(family_v6))
    }
}

/// Longest PvD name kept in the kernel (bytes, NUL-padded).
pub const PVD_NAME_LEN: usize = 16;

/// Most DNS servers kept per PvD.
pub const MAX_DNS: usize = 4;

/// What an operator reading the pinned maps needs besides [`Pvd`]: the
/// PvD's name, routing table and DNS servers; the programs read only the
/// name, to serve [`api::MIF_PVD`]. Written by the daemon only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvdMeta {
    pub name: [u8; PVD_NAME_LEN],
    pub table: u32,
    /// How many of `dns` are set.
    pub dns_count: u32,
    /// DNS servers as IPv6 addresses (IPv4 ones v4-mapped).
    pub dns: [[u8; 16]; MAX_DNS],
}

/// One packet a guard dropped, as the guards write it to
/// [`names::MAP_GUARD_LOG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardDrop {
    pub policy: u32,
    /// The interface it was leaving by.
    pub ifindex: u32,
    /// `AF_INET` or `AF_INET6` for the egress guard's packets, the
    /// socket's family (`AF_PACKET`) for the packet guard's frames.
    pub family: u32,
    pub _pad: u32,
}

/// The size of [`names::MAP_GUARD_LOG`]: room for about 680 drops between
/// two reads of the daemon; more are counted, not logged.
pub const GUARD_LOG_BYTES: u32 = 16384;

/// One retransmission timeout of a connection on a PvD, as `mif_tcp_health`
/// writes it to [`names::MAP_TCP_TROUBLE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTrouble {
    /// The socket's mark: a PvD's within the mark mask (other bits are
    /// whatever else set them).
    pub mark: u32,
    /// The connection's TCP state (the kernel's `TCP_*`, as
    /// `BPF_TCP_*`): [`TCP_SYN_SENT`] for a connect whose SYN went
    /// unanswered, [`TCP_ESTABLISHED`] for data that went unacknowledged.
    pub state: u32,
    /// How often the segment was retransmitted before this timeout (0 at
    /// the first).
    pub retransmits: u32,
    /// `TCP_TROUBLE_*` flags.
    pub flags: u32,
}

/// [`TcpTrouble`] flag: the kernel gives the connection up with this
/// timeout (the application sees ETIMEDOUT).
pub const TCP_TROUBLE_EXPIRED: u32 = 1 << 0;
/// [`TcpTrouble`] flag: an `AF_INET6` socket (IPv4-mapped peers included).
pub const TCP_TROUBLE_V6: u32 = 1 << 1;

/// TCP states of [`TcpTrouble::state`] (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_SYN_SENT: u32 = 2;

/// The size of [`names::MAP_TCP_TROUBLE`]: about 680 records between two
/// reads of the daemon. As large as the guards' ring, and for the same
/// reason: a ring's size must be a multiple of the page size, and 16 KiB
/// is one on 4 KiB and 16 KiB pages alike.
pub const TCP_TROUBLE_BYTES: u32 = 16384;

/// Key of the counter map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub policy: u32,
    /// PvD index, or [`COUNTER_NO_PVD`] for refusals and pass-throughs.
    pub pvd: u32,
}

/// The `pvd` of counters that belong to no PvD.
pub const COUNTER_NO_PVD: u32 = u32::MAX;

/// Counters of one (policy, PvD), shared by all CPUs (atomic adds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct Counters {
    /// Sockets given this PvD's mark.
    pub steered: u64,
    /// Of those, sockets that got it because an earlier PvD was unavailable.
    pub fallback: u64,
    /// Sockets refused because the strict policy had no available PvD.
    pub refused: u64,
    /// Sockets left untouched because the policy had no available PvD.
    pub unsteered: u64,
    /// Sockets given their PvD's source at connect(): bound (IPv6), or
    /// left to the PvD's routes, which name it (IPv4).
    pub bound: u64,
    /// Source addresses set on unconnected sendmsg().
    pub src_set: u64,
    /// Operations refused to keep a socket on its policy's PvDs: binds,
    /// sources and destinations that would take it to another network,
    /// interface or mark options (strict), raw sockets (`deny_raw`), and
    /// DNS queries of strict `dns = "pvd"` policies whose PvD has no
    /// resolver.
    pub denied: u64,
    /// DNS queries (UDP datagrams sent, TCP and UDP connects) redirected
    /// to the PvD's resolver.
    pub dns: u64,
    /// Connections to an excluded destination, left to the main table.
    pub excluded: u64,
    /// Packets of strict sockets the egress guard dropped because they were
    /// leaving by an interface none of the policy's PvDs uses; counted
    /// under the PvD whose interface it was ([`COUNTER_NO_PVD`] for an
    /// interface of no PvD).
    pub guard_drops: u64,
    /// Sockets whose process chose this PvD itself (`SOL_MIF`, see [`api`]).
    pub chosen: u64,
}

/// What a redirected DNS socket asked and where it was sent, so that
/// replies and `getpeername` show the address the application asked (its
/// resolver library drops replies from any other address). Addresses in
/// IPv6 form (IPv4 ones v4-mapped), words in network byte order; ports in
/// network byte order in the low 16 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsNat {
    /// The server the application addressed.
    pub orig: [u32; 4],
    /// The PvD resolver the query went to instead.
    pub resolver: [u32; 4],
    pub orig_port: u32,
    pub resolver_port: u32,
}

/// The daemon's DNS forwarder (per-domain selection, RFC 6731). While
/// `port_base` is non-zero, `dns = "pvd"` queries whose PvD has resolvers go
/// to the forwarder on loopback, port `port_base + PvD index`, instead of
/// straight to the PvD's resolver; the port tells the forwarder the PvD.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsForward {
    pub port_base: u32,
}

/// Most redirected DNS sockets remembered at once (an LRU: the oldest are
/// forgotten, a resolver library's socket lives for one lookup). An LRU is
/// always preallocated (96 bytes an entry, 1.5 MiB here): 16,384 in-flight
/// lookups is far more than resolvers keep open, and stays above the
/// 128 free entries per CPU that older kernels' LRU keeps local on 128
/// CPUs (before Linux 6.16 a smaller LRU could evict entries early).
pub const MAX_DNS_NAT: u32 = 16_384;

/// `a.b.c.d` (network-order word) as the v4-mapped IPv6 words.
pub const fn v4_mapped_words(addr4: u32) -> [u32; 4] {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr4]
}

/// Mark of the PvD with `index`, given the mask's lowest bit.
pub const fn pvd_mark(index: u32, shift: u32) -> u32 {
    (index + 1) << shift
}

/// PvD index carried by `mark`, if the mark is one of ours. The value with
/// every bit of the mask set is no PvD's: it is [`excluded_mark`].
pub const fn pvd_from_mark(mark: u32, mask: u32, shift: u32) -> Option<u32> {
    let v = (mark & mask) >> shift;
    if v == 0 || v > MAX_PVDS || mark & mask == mask {
        None
    } else {
        Some(v - 1)
    }
}

/// The mark of a socket that its policy's `exclude` took off its PvD at
/// connect(): every bit of the mask. No mif rule matches it (so the main
/// table routes the socket) and no PvD has it, yet the hooks can tell the
/// socket apart from one mif never steered, and keep a strict policy's
/// excluded socket to excluded destinations.
pub const fn excluded_mark(mask: u32) -> u32 {
    mask
}

/// Whether `mark` is [`excluded_mark`].
pub const fn is_excluded_mark(mark: u32, mask: u32) -> bool {
    mask != 0 && mark & mask == mask
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made only of integers, with padding
    // spelled out as fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::TaskLayout {}
    unsafe impl aya::Pod for super::Policy {}
    unsafe impl aya::Pod for super::Pvd {}
    unsafe impl aya::Pod for super::CounterKey {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::PvdMeta {}
    unsafe impl aya::Pod for super::DnsNat {}
    unsafe impl aya::Pod for super::DnsForward {}
    unsafe impl aya::Pod for super::ExcludeKey {}
    unsafe impl aya::Pod for super::TcpTrouble {}
    unsafe impl aya::Pod for super::SelectorKey {}
    unsafe impl aya::Pod for super::CgroupNaming {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_through_the_mask() {
        let (mask, shift) = (0x00ff_0000, 16);
        for index in 0..MAX_PVDS {
            let mark = pvd_mark(index, shift);
            assert_eq!(mark & !mask, 0);
            assert_eq!(pvd_from_mark(mark | 0x1234, mask, shift), Some(index));
        }
        assert_eq!(pvd_from_mark(0x1234, mask, shift), None);
    }

    #[test]
    fn strict_sockopts_are_the_interface_and_mark_ones() {
        use sockopt::*;
        for (level, name) in [
            (SOL_SOCKET, SO_MARK),
            (SOL_SOCKET, SO_BINDTODEVICE),
            (SOL_SOCKET, SO_BINDTOIFINDEX),
            (SOL_SOCKET, SO_DONTROUTE),
            (SOL_IP, IP_UNICAST_IF),
            (SOL_IP, IP_MULTICAST_IF),
            (SOL_IP, MCAST_JOIN_GROUP),
            (SOL_IPV6, IPV6_UNICAST_IF),
            (SOL_IPV6, IPV6_MULTICAST_IF),
            (SOL_IPV6, IPV6_PKTINFO),
            (SOL_IPV6, MCAST_JOIN_GROUP),
            (SOL_PACKET, PACKET_QDISC_BYPASS),
            (SOL_XDP, 4), // XDP_UMEM_REG
        ] {
            assert!(moves_off_pvd(level, name), "{level}/{name}");
        }
        assert!(!moves_off_pvd(SOL_PACKET, 1)); // PACKET_ADD_MEMBERSHIP
        assert!(!moves_off_pvd(SOL_SOCKET, 2)); // SO_REUSEADDR
        assert!(!moves_off_pvd(SOL_IP, 1)); // IP_TOS
        assert!(!moves_off_pvd(SOL_IP, 8)); // IP_PKTINFO: receive side only
        assert!(!moves_off_pvd(SOL_IPV6, 26)); // IPV6_V6ONLY
        assert!(!moves_off_pvd(6, 1)); // TCP_NODELAY
        assert!(
            !moves_off_pvd(SOL_IP, SO_MARK),
            "36 at SOL_IP is another option"
        );
    }

    fn policy(prefer: &[u8]) -> Policy {
        let mut p = Policy {
            id: 1,
            prefer: [NO_PVD; MAX_PREFER],
            flags: POLICY_STRICT,
            _pad: [0; 3],
            allow: 0,
        };
        p.prefer[..prefer.len()].copy_from_slice(prefer);
        p
    }

    #[test]
    fn a_strict_policy_chooses_among_its_prefer_list_only() {
        let mut p = policy(&[1, 3]);
        p.allow = 1 << 5;
        assert!(p.may_choose(1) && p.may_choose(3));
        assert!(!p.may_choose(5), "strict: allow does not count");
        assert!(!p.may_choose(0));
        p.flags = 0;
        assert!(p.may_choose(5), "non-strict: allow counts");
        assert!(!p.may_choose(0) && !p.may_choose(63) && !p.may_choose(200));
    }

    #[test]
    fn degraded_pvds_are_choosable_only_in_the_second_round() {
        let healthy = Pvd {
            flags: PVD_AVAIL_V4 | PVD_AVAIL_V6,
            ..Default::default()
        };
        let captive4 = Pvd {
            flags: PVD_AVAIL_V4 | PVD_AVAIL_V6 | PVD_DEGRADED_V4,
            ..Default::default()
        };
        let down = Pvd {
            flags: PVD_DEGRADED_V4,
            ..Default::default()
        };
        assert!(healthy.choosable(false, true) && healthy.choosable(true, true));
        assert!(!captive4.choosable(false, true), "degraded for IPv4");
        assert!(captive4.choosable(false, false), "but available");
        assert!(captive4.choosable(true, true), "IPv6 is validated apart");
        assert!(!down.choosable(false, false), "never an unavailable one");
    }

    #[test]
    fn strict_binds_stay_on_listed_available_pvds() {
        let p = policy(&[1, 3]);
        let up = Pvd {
            flags: PVD_AVAIL_V4,
            ..Default::default()
        };
        let down = Pvd::default();
        assert!(p.lists(3) && !p.lists(0) && !p.lists(2));
        assert!(p.may_bind(NO_OWNER, false), "an address of no PvD");
        assert!(p.may_bind(1, up.available(false)));
        assert!(!p.may_bind(0, up.available(false)), "a PvD not listed");
        assert!(!p.may_bind(3, down.available(false)), "listed, unavailable");
        assert!(!p.may_bind(1, up.available(true)), "unavailable for IPv6");
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(core::mem::size_of::<Settings>(), 32);
        assert_eq!(core::mem::size_of::<Policy>(), 24);
        assert_eq!(core::mem::size_of::<Pvd>(), 52);
        assert_eq!(core::mem::size_of::<CounterKey>(), 8);
        assert_eq!(core::mem::size_of::<Counters>(), 88);
        assert_eq!(core::mem::size_of::<ExcludeKey>(), 20);
        assert_eq!(core::mem::size_of::<DnsNat>(), 40);
        assert_eq!(core::mem::size_of::<PvdMeta>(), 88);
        assert_eq!(core::mem::size_of::<TcpTrouble>(), 16);
    }
}
