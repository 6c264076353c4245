; chip_ioapic: the 8254's IRQ0 through the 82093AA I/O APIC to the local APIC, in long mode.
; qemu-args: -icount shift=3,sleep=off -rtc clock=vm
;
; Covers: I/O APIC ID, version (max redirection entry 23) and redirection-entry read-back through
; IOREGSEL/IOWIN; the PIT's IRQ0 arrives on pin 2 (the ISA IRQ 0 -> GSI 2 override every PC has);
; a fixed, physical, edge, active-high entry delivers its vector to the local APIC: ISR bit set in the
; handler, cleared by the EOI register write; 50 periods of mode 2 at 1193 counts take 50 x 1193 /
; 1.193182 MHz = 49.99 ms = 178,945 PM ticks; masking the entry (bit 16) stops delivery, remote IRR stays 0
; for an edge entry; the 8259s stay fully masked throughout (so nothing comes through LINT0).
; Intel 82093AA datasheet (registers, redirection table), SDM Vol. 3A 10.8 (ISR, EOI), 10.4 (SVR),
; MP spec / ACPI MADT interrupt source override for IRQ 0. QEMU: default machine (pc) and CPU.
%include "common.inc"
%include "longmode.inc"
%include "chip.inc"

TICKS   equ LM_USER + 0x00
T0      equ LM_USER + 0x08
ISR_IN  equ LM_USER + 0x10
VEC     equ 0x40

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
; ioapic_read: eax = register ecx.  ioapic_write: register ecx = eax.
ioapic_read:
        push rdi
        mov edi, IOAPIC
        mov [rdi], ecx
        mov eax, [rdi + 0x10]
        pop rdi
        ret
ioapic_write:
        push rdi
        mov edi, IOAPIC
        mov [rdi], ecx
        mov [rdi + 0x10], eax
        pop rdi
        ret

timer_handler:
        push rax
        push rdi
        inc qword [TICKS]
        mov edi, LAPIC
        mov eax, [rdi + 0x100 + 0x10 * (VEC / 32)]     ; ISR bits 64-95
        shr eax, VEC % 32
        and eax, 1
        mov [ISR_IN], rax
        mov dword [rdi + 0xB0], 0                      ; EOI
        pop rdi
        pop rax
        iretq

main64:
        PM_INIT
        call pic_init                   ; 8259s fully masked, local APIC software-enabled
        SET_GATE VEC, timer_handler, 0x8E, 0
        mov ecx, 0
        call ioapic_read
        shr eax, 24
        and eax, 0x0F
        CHECK64 rax, 0, "I/O APIC ID 0"
        mov ecx, 1
        call ioapic_read
        shr eax, 16
        and eax, 0xFF
        CHECK64 rax, 23, "version register: 24 redirection entries"
        ; pin 2: vector VEC, fixed, physical, edge, active high, unmasked, destination APIC 0
        mov ecx, 0x15
        xor eax, eax
        call ioapic_write
        mov ecx, 0x14
        mov eax, VEC
        call ioapic_write
        call ioapic_read
        and eax, 0x1FFFF
        CHECK64 rax, VEC, "redirection entry 2 reads back"
        mov qword [TICKS], 0
        mov al, 0x34                    ; PIT counter 0, mode 2, 1193 counts
        out 0x43, al
        mov al, 1193 & 0xFF
        out 0x40, al
        mov al, 1193 >> 8
        out 0x40, al
        WAIT_COUNT TICKS, 1
        CHECK64 [ISR_IN], 1, "ISR bit of the vector set in the handler"
        mov edi, LAPIC
        mov eax, [rdi + 0x100 + 0x10 * (VEC / 32)]
        shr eax, VEC % 32
        and eax, 1
        CHECK64 rax, 0, "ISR bit clear after EOI"
        call pm_read
        mov [T0], rax
        mov qword [TICKS], 0
        WAIT_COUNT TICKS, 50
        PM_ELAPSED T0
        CHECK_RANGE rax, 175000, 358000, "50 PIT periods via pin 2 = 178945 PM ticks"
        ; mask the entry
        mov ecx, 0x14
        mov eax, VEC | (1 << 16)
        call ioapic_write
        mov qword [TICKS], 0
        sti
        mov ecx, PM_HZ / 100
        call pm_delay
        cli
        CHECK64 [TICKS], 0, "masked entry delivers nothing"
        mov ecx, 0x14
        call ioapic_read
        and eax, 1 << 14
        CHECK64 rax, 0, "no remote IRR on an edge entry"
        mov al, 0x30                    ; stop the PIT: mode 0, OUT low
        out 0x43, al
        jmp finish64

%include "reset.inc"
