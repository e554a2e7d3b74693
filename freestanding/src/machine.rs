//! Port I/O and ending the VM.
//!
//! Without ACPI the guest ends its VM the two ways VMMs watch for: the i8042
//! reset command (0xfe to port 0x64), which vmbench's VMM treats as the end,
//! and, where nothing handles that (QEMU microvm has no i8042), a triple
//! fault, which `qemu -no-reboot` turns into QEMU's exit.

use core::arch::asm;

const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O reaches devices only; it touches no memory of ours.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as outb.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags));
    }
    value
}

#[repr(C, packed)]
struct Idtr {
    limit: u16,
    base: u64,
}

pub fn end_vm() -> ! {
    outb(I8042_COMMAND, I8042_RESET);
    let empty = Idtr { limit: 0, base: 0 };
    // SAFETY: deliberately fatal: with an empty IDT the breakpoint cannot be
    // delivered, nor the #GP and #DF that follow, so the CPU triple-faults.
    unsafe {
        asm!("lidt [{}]", "int3", in(reg) &empty, options(readonly, nostack));
    }
    loop {
        // SAFETY: halting with interrupts off only stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
