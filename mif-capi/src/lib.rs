//! libmif: the MIF API's C ABI (`include/mif.h`, `libmif.so.0`) over the
//! `mif-api` crate, and, over this ABI, the Python module
//! (`python/mif.py`). A crate of its own so that the cdylib is built apart
//! from the rlib that Rust programs link. Every call returns -1 (or
//! NULL) on failure with `errno` set as [`Error::errno`] gives it, and
//! [`mif_last_error`] says what went wrong in words. Lists are opaque,
//! read with accessors and freed by their `_free`: adding a property later
//! breaks no caller. Structs the caller allocates start with their size.
#![allow(clippy::missing_safety_doc)] // Documented in mif.h, per function.

use std::{
    cell::RefCell,
    ffi::{c_char, c_int, CStr, CString},
    os::fd::IntoRawFd as _,
    ptr,
    time::Duration,
};

use mif_api::{ConnectOptions, Error, Event, Pvd, Watch};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `e` for [`mif_last_error`] and `errno`.
fn fail(e: &Error) {
    LAST_ERROR.with(|last| {
        *last.borrow_mut() = CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
    });
    // SAFETY: errno is this thread's.
    unsafe { *libc::__errno_location() = e.errno() };
}

/// `s` as a Rust string; `None` (after recording the error) for NULL or
/// invalid UTF-8.
unsafe fn text<'a>(s: *const c_char, what: &str) -> Option<&'a str> {
    if s.is_null() {
        fail(&Error::BadName(format!("{what} is NULL")));
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated string (mif.h).
    match unsafe { CStr::from_ptr(s) }.to_str() {
        Ok(s) => Some(s),
        Err(_) => {
            fail(&Error::BadName(format!("{what} is not UTF-8")));
            None
        }
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// What went wrong in this thread's last failed call, in words.
#[unsafe(no_mangle)]
pub extern "C" fn mif_last_error() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// The `SOL_MIF` choice of one socket (see [`mif_api::set_socket_pvd`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_socket_set_pvd(fd: c_int, pvd: *const c_char) -> c_int {
    let Some(pvd) = (unsafe { text(pvd, "pvd") }) else {
        return -1;
    };
    match mif_api::set_socket_pvd(fd, pvd) {
        Ok(()) => 0,
        Err(e) => {
            fail(&e);
            -1
        }
    }
}

/// Writes the socket's PvD name, NUL-terminated, into `buf` (`len` bytes,
/// 16 hold any); returns its length, 0 for a socket mif does not steer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_socket_get_pvd(fd: c_int, buf: *mut c_char, len: usize) -> c_int {
    match mif_api::socket_pvd(fd) {
        Ok(name) => {
            let name = name.unwrap_or_default();
            if buf.is_null() || len <= name.len() {
                fail(&Error::Socket(std::io::Error::from_raw_os_error(
                    libc::ERANGE,
                )));
                return -1;
            }
            // SAFETY: buf has len > name.len() bytes (checked above).
            unsafe {
                ptr::copy_nonoverlapping(name.as_ptr().cast(), buf, name.len());
                *buf.add(name.len()) = 0;
            }
            name.len() as c_int
        }
        Err(e) => {
            fail(&e);
            -1
        }
    }
}

/// See [`mif_api::set_process_pvd`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_set_process_pvd(pvd: *const c_char) -> c_int {
    let Some(pvd) = (unsafe { text(pvd, "pvd") }) else {
        return -1;
    };
    match mif_api::set_process_pvd(pvd) {
        Ok(()) => 0,
        Err(e) => {
            fail(&e);
            -1
        }
    }
}

/// A list of strings (addresses, resolvers, domains, resolved names).
pub struct MifStrings {
    items: Vec<CString>,
}

impl MifStrings {
    fn of<T: ToString>(items: &[T]) -> Self {
        Self {
            items: items.iter().map(|i| cstring(&i.to_string())).collect(),
        }
    }
}

/// One PvD, as [`mif_pvds`] lists it.
pub struct MifPvd {
    name: CString,
    interface: CString,
    kind: CString,
    available_v4: bool,
    available_v6: bool,
    validation_v4: Option<CString>,
    validation_v6: Option<CString>,
    addresses: MifStrings,
    resolvers: MifStrings,
    domains: MifStrings,
}

impl From<&Pvd> for MifPvd {
    fn from(p: &Pvd) -> Self {
        Self {
            name: cstring(&p.name),
            interface: cstring(&p.interface),
            kind: cstring(&p.kind),
            available_v4: p.available_v4,
            available_v6: p.available_v6,
            validation_v4: p.validation_v4.as_deref().map(cstring),
            validation_v6: p.validation_v6.as_deref().map(cstring),
            addresses: MifStrings::of(&p.addresses),
            resolvers: MifStrings::of(&p.resolvers),
            domains: MifStrings::of(&p.domains),
        }
    }
}

pub struct MifPvdList {
    pvds: Vec<MifPvd>,
}

/// The PvDs now; free with [`mif_pvd_list_free`].
#[unsafe(no_mangle)]
pub extern "C" fn mif_pvds() -> *mut MifPvdList {
    match mif_api::pvds() {
        Ok(list) => Box::into_raw(Box::new(MifPvdList {
            pvds: list.iter().map(MifPvd::from).collect(),
        })),
        Err(e) => {
            fail(&e);
            ptr::null_mut()
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_list_count(list: *const MifPvdList) -> usize {
    // SAFETY: NULL or a list from mif_pvds (mif.h).
    unsafe { list.as_ref() }.map_or(0, |l| l.pvds.len())
}

/// The `i`th PvD, valid until the list is freed; NULL past the end.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_list_get(list: *const MifPvdList, i: usize) -> *const MifPvd {
    // SAFETY: as above.
    unsafe { list.as_ref() }
        .and_then(|l| l.pvds.get(i))
        .map_or(ptr::null(), ptr::from_ref)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_list_free(list: *mut MifPvdList) {
    if !list.is_null() {
        // SAFETY: a list from mif_pvds, freed once (mif.h).
        drop(unsafe { Box::from_raw(list) });
    }
}

/// Reads a field of a PvD from [`mif_pvd_list_get`] (NULL gives the default).
unsafe fn with_pvd<T>(pvd: *const MifPvd, default: T, f: impl FnOnce(&MifPvd) -> T) -> T {
    // SAFETY: NULL or a PvD from mif_pvd_list_get, its list alive (mif.h).
    unsafe { pvd.as_ref() }.map_or(default, f)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_name(pvd: *const MifPvd) -> *const c_char {
    unsafe { with_pvd(pvd, ptr::null(), |p| p.name.as_ptr()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_interface(pvd: *const MifPvd) -> *const c_char {
    unsafe { with_pvd(pvd, ptr::null(), |p| p.interface.as_ptr()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_kind(pvd: *const MifPvd) -> *const c_char {
    unsafe { with_pvd(pvd, ptr::null(), |p| p.kind.as_ptr()) }
}

/// 1 when the PvD is available for `family` (AF_INET, AF_INET6), else 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_available(pvd: *const MifPvd, family: c_int) -> c_int {
    unsafe {
        with_pvd(pvd, 0, |p| match family {
            libc::AF_INET => p.available_v4 as c_int,
            libc::AF_INET6 => p.available_v6 as c_int,
            _ => 0,
        })
    }
}

/// The validation state for `family` (`validated`, `captive`, `failing`,
/// ...), NULL when the family is not validated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_validation(pvd: *const MifPvd, family: c_int) -> *const c_char {
    unsafe {
        with_pvd(pvd, ptr::null(), |p| {
            let v = if family == libc::AF_INET6 {
                &p.validation_v6
            } else {
                &p.validation_v4
            };
            v.as_ref().map_or(ptr::null(), |s| s.as_ptr())
        })
    }
}

/// The PvD's source addresses, resolvers or domains: a list owned by the
/// PvD (do not free it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_addresses(pvd: *const MifPvd) -> *const MifStrings {
    unsafe { with_pvd(pvd, ptr::null(), |p| ptr::from_ref(&p.addresses)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_resolvers(pvd: *const MifPvd) -> *const MifStrings {
    unsafe { with_pvd(pvd, ptr::null(), |p| ptr::from_ref(&p.resolvers)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_pvd_domains(pvd: *const MifPvd) -> *const MifStrings {
    unsafe { with_pvd(pvd, ptr::null(), |p| ptr::from_ref(&p.domains)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_strings_count(list: *const MifStrings) -> usize {
    // SAFETY: NULL or a live list (mif.h).
    unsafe { list.as_ref() }.map_or(0, |l| l.items.len())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_strings_get(list: *const MifStrings, i: usize) -> *const c_char {
    // SAFETY: as above.
    unsafe { list.as_ref() }
        .and_then(|l| l.items.get(i))
        .map_or(ptr::null(), |s| s.as_ptr())
}

/// Frees a list from [`mif_resolve`] (not one a PvD owns).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_strings_free(list: *mut MifStrings) {
    if !list.is_null() {
        // SAFETY: a list from mif_resolve, freed once (mif.h).
        drop(unsafe { Box::from_raw(list) });
    }
}

/// The addresses of `host` through the resolvers of the PvD `pvd`, IPv6
/// first; free with [`mif_strings_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_resolve(pvd: *const c_char, host: *const c_char) -> *mut MifStrings {
    let (Some(pvd), Some(host)) = (unsafe { text(pvd, "pvd") }, unsafe { text(host, "host") })
    else {
        return ptr::null_mut();
    };
    match mif_api::pvd(pvd).and_then(|p| mif_api::resolve(&p, host)) {
        Ok(addrs) => Box::into_raw(Box::new(MifStrings::of(&addrs))),
        Err(e) => {
            fail(&e);
            ptr::null_mut()
        }
    }
}

/// `struct mif_connect_options` (mif.h).
#[repr(C)]
pub struct MifConnectOptions {
    /// `sizeof(struct mif_connect_options)`, for the ABI's later growth.
    pub size: u32,
    /// Between the starts of two attempts; 0: 250 ms.
    pub attempt_delay_ms: u32,
    /// The whole call's limit; 0: 30 s.
    pub timeout_ms: u32,
    /// How long to wait for the first PvD's addresses once another's are
    /// known; 0: 50 ms.
    pub resolution_delay_ms: u32,
    /// Only this PvD; NULL: the PvDs the caller's policy allows.
    pub pvd: *const c_char,
}

/// `struct mif_connection` (mif.h).
#[repr(C)]
pub struct MifConnection {
    /// The connected socket, also [`mif_connect`]'s return value.
    pub fd: c_int,
    /// The PvD it leaves by, NUL-terminated.
    pub pvd: [c_char; 16],
    /// The address it connected to (no port), NUL-terminated.
    pub address: [c_char; 46],
    pub port: u16,
    /// How many attempts were started, the winner included.
    pub attempts: u32,
}

fn ms(value: u32, default: Duration) -> Duration {
    match value {
        0 => default,
        v => Duration::from_millis(v.into()),
    }
}

fn copy_text<const N: usize>(dst: &mut [c_char; N], s: &str) {
    let n = s.len().min(N - 1);
    for (d, b) in dst.iter_mut().zip(&s.as_bytes()[..n]) {
        *d = *b as c_char;
    }
    dst[n] = 0;
}

/// Happy Eyeballs across PvDs (see [`mif_api::connect`]): the connected
/// socket's fd (the caller owns it), or -1. `options` may be NULL; `out`
/// may be NULL, else it is filled.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_connect(
    host: *const c_char,
    port: u16,
    options: *const MifConnectOptions,
    out: *mut MifConnection,
) -> c_int {
    let Some(host) = (unsafe { text(host, "host") }) else {
        return -1;
    };
    let defaults = ConnectOptions::default();
    let mut opts = defaults.clone();
    // SAFETY: NULL or a live struct of at least `size` bytes (mif.h); the
    // fields read here are in every version.
    if let Some(o) = unsafe { options.as_ref() } {
        if (o.size as usize) < std::mem::size_of::<MifConnectOptions>() {
            fail(&Error::BadName(
                "mif_connect_options.size is too small".into(),
            ));
            return -1;
        }
        opts.attempt_delay = ms(o.attempt_delay_ms, defaults.attempt_delay);
        opts.timeout = ms(o.timeout_ms, defaults.timeout);
        opts.resolution_delay = ms(o.resolution_delay_ms, defaults.resolution_delay);
        if !o.pvd.is_null() {
            let Some(pvd) = (unsafe { text(o.pvd, "options.pvd") }) else {
                return -1;
            };
            opts.pvds = Some(vec![pvd.to_owned()]);
        }
    }
    match mif_api::connect(host, port, &opts) {
        Ok(won) => {
            let fd = won.stream.into_raw_fd();
            // SAFETY: NULL or a live struct (mif.h).
            if let Some(out) = unsafe { out.as_mut() } {
                out.fd = fd;
                copy_text(&mut out.pvd, &won.pvd);
                copy_text(&mut out.address, &won.address.ip().to_string());
                out.port = won.address.port();
                out.attempts = won.attempts as u32;
            }
            fd
        }
        Err(e) => {
            fail(&e);
            -1
        }
    }
}

/// A subscription to changes (see [`mif_api::Watch`]).
pub struct MifWatch {
    watch: Watch,
}

#[unsafe(no_mangle)]
pub extern "C" fn mif_watch_open() -> *mut MifWatch {
    match Watch::open() {
        Ok(watch) => Box::into_raw(Box::new(MifWatch { watch })),
        Err(e) => {
            fail(&e);
            ptr::null_mut()
        }
    }
}

/// The fd to poll for readability.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_watch_fd(watch: *const MifWatch) -> c_int {
    // SAFETY: NULL or a live watch (mif.h).
    unsafe { watch.as_ref() }.map_or(-1, |w| w.watch.fd())
}

/// `MIF_EVENT_PVD` (1) with the PvD's name in `pvd` (`len` bytes),
/// `MIF_EVENT_POLICIES` (2), 0 when the daemon went away, -1 on error.
/// Blocks until an event is there: poll [`mif_watch_fd`] first.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_watch_next(
    watch: *mut MifWatch,
    pvd: *mut c_char,
    len: usize,
) -> c_int {
    // SAFETY: NULL or a live watch (mif.h).
    let Some(w) = (unsafe { watch.as_mut() }) else {
        return -1;
    };
    match w.watch.next_event() {
        Ok(None) => 0,
        Ok(Some(Event::Pvd(p))) => {
            if !pvd.is_null() && len > 0 {
                let n = p.name.len().min(len - 1);
                // SAFETY: pvd has len bytes; n < len.
                unsafe {
                    ptr::copy_nonoverlapping(p.name.as_ptr().cast(), pvd, n);
                    *pvd.add(n) = 0;
                }
            }
            1
        }
        Ok(Some(Event::Policies)) => 2,
        Err(e) => {
            fail(&e);
            -1
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn mif_watch_close(watch: *mut MifWatch) {
    if !watch.is_null() {
        // SAFETY: a watch from mif_watch_open, closed once (mif.h).
        drop(unsafe { Box::from_raw(watch) });
    }
}
