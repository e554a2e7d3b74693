//! The device thread: one epoll over every device's event descriptor (see
//! [`VirtioDevice::event_fd`]) and a stop eventfd. When a device's
//! descriptor is readable (a queue notify arrived through its ioeventfd, or
//! one of its host sockets has data), the thread takes the device's lock and
//! lets it do its work; vCPU threads only take that lock for register
//! accesses, so the guest keeps running while devices work.
//!
//! [`VirtioDevice::event_fd`]: crate::devices::virtio::mmio::VirtioDevice::event_fd

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::lock;
use crate::devices::virtio::mmio::MmioTransport;
use crate::seccomp::{self, Gate, ThreadKind};

const STOP: u64 = u64::MAX;

pub struct EventLoop {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Starts the device thread: it installs its seccomp filter and waits
    /// at `gate` before serving anything; `forbidden_call` is the test aid
    /// `--forbidden-syscall-in devices`.
    pub fn spawn(
        devices: Vec<Arc<Mutex<MmioTransport>>>,
        gate: Arc<Gate>,
        forbidden_call: bool,
    ) -> io::Result<EventLoop> {
        let epoll = Epoll::new()?;
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        for (index, device) in devices.iter().enumerate() {
            if let Some(fd) = lock(device).device().event_fd() {
                epoll.ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, index as u64),
                )?;
            }
        }
        let thread = std::thread::Builder::new()
            .name("vmm-devices".into())
            .spawn(move || {
                let go = gate.enter(ThreadKind::Devices);
                drop(gate);
                if go && forbidden_call {
                    seccomp::make_forbidden_call();
                }
                if go {
                    run(&epoll, &devices);
                }
            })?;
        Ok(EventLoop {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(thread) = self.thread.take() {
            // A failed write leaves the thread running; it dies with the process.
            if self.stop.write(1).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(epoll: &Epoll, devices: &[Arc<Mutex<MmioTransport>>]) {
    let mut events = vec![EpollEvent::default(); 16];
    loop {
        let ready = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        for event in &events[..ready] {
            match event.data() {
                STOP => return,
                index => {
                    if let Some(device) = devices.get(index as usize) {
                        lock(device).device_mut().process_events();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::devices::virtio::test_device::TestDevice;

    #[test]
    fn a_readable_device_is_processed_and_stop_ends_the_thread() {
        let event = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let kick = event.try_clone().unwrap();
        let (device, runs) = TestDevice::woken_by(event);
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            Box::new(device),
            Arc::default(),
        )));
        let event_loop =
            EventLoop::spawn(vec![transport], Arc::new(Gate::open_unfiltered()), false).unwrap();
        for expected in 1..=3 {
            kick.write(1).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while runs.load(Ordering::SeqCst) < expected {
                assert!(Instant::now() < deadline, "device not processed");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        event_loop.stop();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
