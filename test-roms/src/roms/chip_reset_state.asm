; chip_reset_state: the 8254 and the 8259A pair as a PC leaves them at reset, seen by a ROM that sets IF
; before programming them.
;
; With the local APIC in virtual-wire mode (LINT0 ExtINT, so the 8259's INTR reaches the CPU) and IF=1:
;  1. nothing arrives while neither the PIT nor the PICs are programmed (50 ms of PM-timer time): the
;     8254 counts nothing until a count is written (82C54 datasheet: a counter starts counting only
;     after a count is written; a PC's BIOS programs counter 0) and an 8259A signals nothing before
;     its initialisation sequence (8259A datasheet, "Initialization Command Words");
;  2. with counter 0 programmed (mode 2, 1193 counts = 1 ms), its IRQ0 edges reach the uninitialised
;     master: still nothing for 20 ms;
;  3. the master's ICW1, ICW2 and ICW3, each followed by 5 ms with IF=1: still nothing (the chip is in
;     its initialisation sequence until the ICW4 that ICW1 announced);
;  4. after ICW4, IRQ0 (ICW1 cleared the IMR) arrives at the new vector base 0x20 and nowhere else;
;     OCW1 masking IRQ0 stops it.
; Any other vector (vector 0 or 8 from a chip at vector base 0, say) is an unexpected exception: FAIL.
;
; QEMU quirk (-DQEMU_QUIRKS skips steps 1-3): QEMU 7.2 resets its i8254 with every counter in mode 3
; counting 65536 (hw/timer/i8254_common.c, pit_reset_common) and its i8259 with vector base 0 and
; delivers IRQs before ICW1 and in the middle of the ICW sequence (hw/intc/i8259.c): a ROM that sets IF
; first takes IRQ0 as vector 0 (#DE). The 8254/8259A datasheets and every PC BIOS (which must program
; both) are what the test follows.
; qemu-args: -icount shift=3,sleep=off -rtc clock=vm
%include "common.inc"
%include "longmode.inc"
%include "chip.inc"

TICKS   equ LM_USER + 0x00

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
irq0_handler:
        inc qword [TICKS]
        push rax
        mov al, 0x20                    ; non-specific EOI
        out 0x20, al
        pop rax
        iretq

; wait_5ms_if: 5 ms of PM-timer time with IF=1, then IF=0. Clobbers eax, ecx, edx, esi.
wait_5ms_if:
        sti
        mov ecx, PM_HZ / 200
        call pm_delay
        cli
        ret

main64:
        PM_INIT
        SET_GATE 0x20, irq0_handler, 0x8E, 0
        mov qword [TICKS], 0
        ; Virtual-wire mode through the local APIC, as pic_init does, but leaving the 8259s untouched.
        mov edi, LAPIC
        mov dword [rdi + 0xF0], 0x1FF
        mov dword [rdi + 0x350], 0x700
        mov dword [rdi + 0x360], 0x400
%ifndef QEMU_QUIRKS
        ; ------------------------------------------------ 1. nothing programmed
        sti
        mov ecx, PM_HZ / 20
        call pm_delay
        cli
        CHECK64 [TICKS], 0, "no interrupt with IF=1 before the PIT and the 8259s are programmed"
        ; ------------------------------------------------ 2. PIT running, PIC uninitialised
        mov al, 0x34                    ; counter 0, LSB then MSB, mode 2
        out 0x43, al
        mov al, 1193 & 0xFF
        out 0x40, al
        mov al, 1193 >> 8
        out 0x40, al
        sti
        mov ecx, PM_HZ / 50
        call pm_delay
        cli
        CHECK64 [TICKS], 0, "uninitialised 8259 ignores 20 ms of IRQ0"
        ; ------------------------------------------------ 3. silent during the ICW sequence
        mov al, 0x11                    ; ICW1: edge, cascade, ICW4 needed
        out 0x20, al
        call wait_5ms_if
        CHECK64 [TICKS], 0, "nothing after ICW1"
        mov al, 0x20                    ; ICW2: vector base 0x20
        out 0x21, al
        call wait_5ms_if
        CHECK64 [TICKS], 0, "nothing after ICW2 (ICW3, ICW4 still expected)"
        mov al, 0x04                    ; ICW3: slave on IRQ2
        out 0x21, al
        call wait_5ms_if
        CHECK64 [TICKS], 0, "nothing after ICW3 (ICW4 still expected)"
%else
        mov al, 0x34
        out 0x43, al
        mov al, 1193 & 0xFF
        out 0x40, al
        mov al, 1193 >> 8
        out 0x40, al
        mov al, 0x11
        out 0x20, al
        mov al, 0x20
        out 0x21, al
        mov al, 0x04
        out 0x21, al
%endif
        ; ------------------------------------------------ 4. ICW4 completes the sequence
        mov al, 0x01                    ; ICW4: 8086 mode, normal EOI
        out 0x21, al
        in al, 0x21
        movzx eax, al
        CHECK64 rax, 0, "IMR cleared by ICW1"
        call wait_5ms_if
        CHECK_RANGE [TICKS], 1, 12, "IRQ0 at vector 0x20 once initialised (5 ms at 1 ms)"
        mov al, 0xFF                    ; OCW1: mask everything
        out 0x21, al
        mov qword [TICKS], 0
        call wait_5ms_if
        CHECK64 [TICKS], 0, "masked IRQ0 silent"
        jmp finish64

%include "reset.inc"
