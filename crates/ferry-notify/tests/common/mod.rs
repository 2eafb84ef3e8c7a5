//! Test support: a page of shared memory inherited by (Linux) or opened by name in (Windows)
//! a child process that re-executes this test binary.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU32;

pub const PAGE: usize = 4096;
const ENV_SHM: &str = "FERRY_NOTIFY_TEST_SHM";

/// The words both processes use. Each counter sits on its own cache line.
#[repr(C, align(64))]
pub struct Line(pub AtomicU32);

#[repr(C)]
pub struct Layout {
    /// Parent -> child sequence number.
    pub ping: Line,
    /// Child -> parent sequence number.
    pub pong: Line,
    /// Nonzero while the parent sleeps (the token names the mechanism).
    pub parent_sleep: Line,
    /// Nonzero while the child sleeps.
    pub child_sleep: Line,
    /// Set by the child once it is set up.
    pub child_ready: Line,
    /// CPU the child last ran on (+1; 0 = unknown).
    pub child_cpu: Line,
    /// Length of `child_spec`, published (Release) after the bytes.
    pub child_spec_len: Line,
    pub child_spec: [u8; 256],
}

const _: () = assert!(size_of::<Layout>() <= PAGE);

pub struct Shared {
    ptr: *mut u8,
    #[cfg(unix)]
    _fd: std::os::fd::OwnedFd,
    #[cfg(windows)]
    _mapping: windows_sys::Win32::Foundation::HANDLE,
}

impl Shared {
    pub fn layout(&self) -> &Layout {
        // SAFETY: `ptr` is a live, page-aligned, zero-initialised shared mapping of PAGE bytes
        // (checked above to hold a `Layout`); all its fields are atomics or plain bytes, valid
        // for any bit pattern, and the mapping outlives `self`.
        unsafe { &*self.ptr.cast::<Layout>() }
    }

    /// Writes `bytes` into `child_spec` and publishes the length.
    pub fn publish_child_spec(&self, bytes: &[u8]) {
        assert!(bytes.len() <= 256);
        let dst = core::ptr::addr_of!(self.layout().child_spec)
            .cast::<u8>()
            .cast_mut();
        // SAFETY: `dst` points at the 256-byte `child_spec` array inside our live mapping; only
        // the child writes it, once, before publishing the length with Release.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        self.layout()
            .child_spec_len
            .0
            .store(bytes.len() as u32, std::sync::atomic::Ordering::Release);
    }

    /// Waits (polling, bounded) for the child's spec and returns it.
    pub fn read_child_spec(&self) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let len = self
                .layout()
                .child_spec_len
                .0
                .load(std::sync::atomic::Ordering::Acquire) as usize;
            if len != 0 {
                assert!(len <= 256, "bad spec length from child");
                let bytes = &self.layout().child_spec[..len];
                return String::from_utf8(bytes.to_vec()).expect("utf-8 spec");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child never published its spec"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

#[cfg(unix)]
mod imp {
    use super::*;
    use rustix::fs::ftruncate;
    use rustix::mm::{MapFlags, ProtFlags, mmap};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn map(fd: OwnedFd) -> Shared {
        // SAFETY: a fresh shared mapping of PAGE bytes of a file at least that long; the
        // kernel picks the address, so nothing existing is replaced.
        let ptr = unsafe {
            mmap(
                core::ptr::null_mut(),
                PAGE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .expect("mmap");
        Shared {
            ptr: ptr.cast(),
            _fd: fd,
        }
    }

    /// Creates the page; returns it and the env var value that lets the child map it
    /// (Linux: the number of an inherited memfd).
    #[cfg(target_os = "linux")]
    pub fn create() -> (Shared, String) {
        use rustix::fs::{MemfdFlags, memfd_create};
        // No CLOEXEC: the child inherits it.
        let fd = memfd_create("ferry-notify-test", MemfdFlags::empty()).expect("memfd_create");
        ftruncate(&fd, PAGE as u64).expect("ftruncate");
        let env = fd.as_raw_fd().to_string();
        (map(fd), env)
    }

    #[cfg(target_os = "linux")]
    pub fn open(env: &str) -> Shared {
        map(inherited(env))
    }

    /// Creates the page; returns it and the env var value that lets the child map it
    /// (macOS: the path of a temporary file).
    #[cfg(not(target_os = "linux"))]
    pub fn create() -> (Shared, String) {
        let path = std::env::temp_dir().join(format!(
            "ferry-notify-test-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let file = std::fs::File::create_new(&path).expect("create shared file");
        ftruncate(&file, PAGE as u64).expect("ftruncate");
        (map(file.into()), path.to_string_lossy().into_owned())
    }

    #[cfg(not(target_os = "linux"))]
    pub fn open(env: &str) -> Shared {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(env)
            .expect("open shared file");
        map(file.into())
    }

    /// Makes `fd` survive exec, returns its number for the child's environment.
    pub fn inheritable(fd: std::os::fd::BorrowedFd<'_>) -> String {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).expect("clear CLOEXEC");
        fd.as_raw_fd().to_string()
    }

    /// Takes ownership of an inherited descriptor named in the environment.
    pub fn inherited(env: &str) -> OwnedFd {
        let raw: i32 = env.parse().expect("fd number");
        // SAFETY: the parent cleared CLOEXEC on this descriptor and passed its number; nothing
        // else in the child owns it.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }
}

#[cfg(windows)]
mod imp {
    use super::*;
    use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
    use windows_sys::Win32::System::Memory::{
        CreateFileMappingW, FILE_MAP_ALL_ACCESS, MapViewOfFile, OpenFileMappingW, PAGE_READWRITE,
    };

    fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().chain(Some(0)).collect()
    }

    fn view(mapping: windows_sys::Win32::Foundation::HANDLE) -> Shared {
        assert!(
            !mapping.is_null(),
            "file mapping: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `mapping` is a valid section handle of PAGE bytes.
        let view = unsafe { MapViewOfFile(mapping, FILE_MAP_ALL_ACCESS, 0, 0, PAGE) };
        assert!(
            !view.Value.is_null(),
            "MapViewOfFile: {}",
            std::io::Error::last_os_error()
        );
        Shared {
            ptr: view.Value.cast(),
            _mapping: mapping,
        }
    }

    pub fn create() -> (Shared, String) {
        let name = format!(
            "Local\\ferry-notify-test-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let w = wide(&name);
        // SAFETY: a pagefile-backed section (INVALID_HANDLE_VALUE) with default security and a
        // NUL-terminated name.
        let mapping = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                core::ptr::null(),
                PAGE_READWRITE,
                0,
                PAGE as u32,
                w.as_ptr(),
            )
        };
        (view(mapping), name)
    }

    pub fn open(env: &str) -> Shared {
        let w = wide(env);
        // SAFETY: NUL-terminated name; the returned handle is checked in `view`.
        let mapping = unsafe { OpenFileMappingW(FILE_MAP_ALL_ACCESS, 0, w.as_ptr()) };
        view(mapping)
    }
}

#[cfg(unix)]
pub use imp::{inheritable, inherited};

pub fn create_shared() -> (Shared, String) {
    imp::create()
}

/// Maps the page named by the environment, if this process is a test child.
pub fn child_shared() -> Option<Shared> {
    std::env::var(ENV_SHM).ok().map(|v| imp::open(&v))
}

/// Re-executes this test binary to run only `test_name` (an `#[ignore]`d child entry point).
pub fn spawn_child(test_name: &str, shm_env: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        test_name,
        "--nocapture",
        "--ignored",
        "--test-threads=1",
    ])
    .env(ENV_SHM, shm_env)
    .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}
