//! Both entry points of a freestanding guest, as a macro its `main.rs`
//! expands once:
//!
//! - `pvh_start` (32-bit protected mode, paging off, EBX = `hvm_start_info`),
//!   named by a `Xen` ELF note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY): how
//!   QEMU's `-kernel` boots an ELF that is not a bzImage;
//! - `linux_start`, the ELF entry point (64-bit long mode, RSI = Linux's
//!   `boot_params`): how linux-loader-based VMMs such as ours enter a vmlinux.
//!
//! Both zero .bss, load the image's own GDT (`boot_gdt`: 0x08 64-bit code,
//! 0x10 data) and page tables (identity map of the first 4 GiB in 2 MiB
//! pages, the top GiB uncached since device MMIO and the local APIC live
//! there), set a 64 KiB stack and call the guest's Rust function with the
//! boot structure's address. They also enable SSE (CR4.OSFXSR): the build
//! emits no SSE instruction, since KVM's instruction emulator cannot run
//! them (see scripts/build-freestanding-guest.sh), but a build without that
//! flag must not fault on the first one.

/// Defines `pvh_start` and `linux_start` (and the PVH note, boot GDT, page
/// tables and boot stack), which call `pvh` with the PVH start info's
/// address and `linux` with the zero page's, both on the boot stack with
/// interrupts off. Each is an `extern "C" fn(u64) -> !`.
#[macro_export]
macro_rules! entry_points {
    (pvh = $pvh:path, linux = $linux:path $(,)?) => {
        ::core::arch::global_asm!(
            r#"
            /* Every data segment register to the boot GDT's data descriptor. */
            .macro load_data_segments
            movl $0x10, %eax
            movw %ax, %ds
            movw %ax, %es
            movw %ax, %ss
            movw %ax, %fs
            movw %ax, %gs
            .endm

            /* QEMU reads this descriptor as a 64-bit value and aligns the note name
               to the segment's alignment, so: 4-byte aligned, 8-byte descriptor. */
            .pushsection .note.Xen, "a", @note
            .balign 4
            .long 4, 8, 18
            .asciz "Xen"
            .quad pvh_start
            .popsection

            .pushsection .text.entry, "ax"
            .code32
            .globl pvh_start
        pvh_start:
            cli
            cld
            movl %ebx, %esi
            movl $__bss_start, %edi
            movl $__bss_end, %ecx
            subl %edi, %ecx
            xorl %eax, %eax
            rep stosb
            movl %cr4, %eax
            orl $0x620, %eax            /* PAE, OSFXSR, OSXMMEXCPT */
            movl %eax, %cr4
            movl $boot_pml4, %eax
            movl %eax, %cr3
            movl $0xc0000080, %ecx      /* EFER */
            rdmsr
            orl $0x100, %eax            /* LME */
            wrmsr
            movl %cr0, %eax
            andl $~0x4, %eax            /* no x87 emulation */
            orl $0x80000003, %eax       /* PG, MP, PE */
            movl %eax, %cr0
            lgdt boot_gdt_ptr
            ljmp $0x08, $pvh_long

            .code64
        pvh_long:
            load_data_segments
            leaq boot_stack_top(%rip), %rsp
            movl %esi, %edi
            call {pvh_main}
            ud2

            .globl linux_start
        linux_start:
            cli
            cld
            leaq __bss_start(%rip), %rdi
            leaq __bss_end(%rip), %rcx
            subq %rdi, %rcx
            xorl %eax, %eax
            rep stosb
            movq %cr4, %rax
            orq $0x620, %rax
            movq %rax, %cr4
            movq %cr0, %rax
            andq $~0x4, %rax
            orq $0x2, %rax
            movq %rax, %cr0
            /* The VMM's identity map covers only the first GiB: MMIO is above. */
            leaq boot_pml4(%rip), %rax
            movq %rax, %cr3
            lgdt boot_gdt_ptr(%rip)
            leaq boot_stack_top(%rip), %rsp
            pushq $0x08
            leaq 1f(%rip), %rax
            pushq %rax
            lretq
        1:
            load_data_segments
            movq %rsi, %rdi
            call {linux_main}
            ud2
            .popsection

            .pushsection .data.boot, "aw"
            .balign 8
        boot_gdt:
            .quad 0
            .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
            .quad 0x00cf92000000ffff    /* 0x10: data */
        boot_gdt_end:
        boot_gdt_ptr:
            .word boot_gdt_end - boot_gdt - 1
            .quad boot_gdt

            .balign 4096
        boot_pml4:
            .quad boot_pdpt + 0x3
            .fill 511, 8, 0
        boot_pdpt:
            .quad boot_pd + 0x3
            .quad boot_pd + 0x1003
            .quad boot_pd + 0x2003
            .quad boot_pd + 0x3003
            .fill 508, 8, 0
        boot_pd:
            .set boot_page, 0
            .rept 1536
            .quad boot_page | 0x83      /* present, writable, 2 MiB */
            .set boot_page, boot_page + 0x200000
            .endr
            .rept 512
            .quad boot_page | 0x9b      /* and uncached (PWT, PCD): MMIO */
            .set boot_page, boot_page + 0x200000
            .endr
            .popsection

            .pushsection .bss.boot_stack, "aw", @nobits
            .balign 16
            .skip 65536
        boot_stack_top:
            .popsection
            "#,
            pvh_main = sym $pvh,
            linux_main = sym $linux,
            options(att_syntax)
        );
    };
}
