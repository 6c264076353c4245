; chip_lapic_timer: the local APIC timer in one-shot and periodic mode, timed against the PM timer.
;
; Covers: divide configuration (divide by 1 and by 16), one-shot mode: current count decreasing from the
; initial count, one interrupt after 10,000,000 bus clocks (10 ms at the 1 GHz APIC timer clock that QEMU
; and Ferrite use = 35,795 PM ticks), current count 0 afterwards and no second interrupt; divide by 16:
; 1,000,000 counts = 16 ms = 57,273 PM ticks; periodic mode: 20 periods of 1,000,000 clocks = 20 ms =
; 71,591 PM ticks, the current count reloads (non-zero while running); writing initial count 0 stops the
; timer; a masked LVT entry delivers nothing although the count still runs to 0. TSC-deadline mode is not
; covered: QEMU's default CPU does not report it.
; SDM Vol. 3A 10.5.4 (APIC timer, divide configuration register, LVT timer modes), 10.8.5 (EOI).
; qemu-args: -icount shift=3,sleep=off -rtc clock=vm
; QEMU: default machine (pc) and CPU.
%include "common.inc"
%include "longmode.inc"
%include "chip.inc"

TICKS   equ LM_USER + 0x00
T0      equ LM_USER + 0x08
VEC     equ 0x41

LVT_TIMER equ 0x320
TMICT     equ 0x380
TMCCT     equ 0x390
TDCR      equ 0x3E0

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
timer_handler:
        push rdi
        inc qword [TICKS]
        mov edi, LAPIC
        mov dword [rdi + 0xB0], 0
        pop rdi
        iretq

main64:
        PM_INIT
        call pic_init
        SET_GATE VEC, timer_handler, 0x8E, 0
        mov edi, LAPIC
        ; ------------------------------------------------ one-shot, divide by 1
        mov dword [rdi + TDCR], 0x0B
        mov dword [rdi + LVT_TIMER], VEC
        mov qword [TICKS], 0
        call pm_read
        mov [T0], rax
        mov dword [rdi + TMICT], 10000000
        mov eax, [rdi + TMCCT]
        CHECK_RANGE rax, 1, 10000000, "one-shot current count below the initial count"
        mov ebx, eax
        mov ecx, 100
        call pm_delay
        mov edi, LAPIC
        mov eax, [rdi + TMCCT]
        cmp eax, ebx
        setb al
        movzx eax, al
        CHECK64 rax, 1, "current count decreases"
        WAIT_COUNT TICKS, 1
        PM_ELAPSED T0
        CHECK_RANGE rax, 35080, 71600, "one-shot 10,000,000 clocks = 35795 PM ticks"
        mov edi, LAPIC
        mov eax, [rdi + TMCCT]
        CHECK64 rax, 0, "current count 0 after one-shot expiry"
        sti
        mov ecx, PM_HZ / 50
        call pm_delay
        cli
        CHECK64 [TICKS], 1, "one-shot fires once"
        ; ------------------------------------------------ one-shot, divide by 16
        mov edi, LAPIC
        mov dword [rdi + TDCR], 0x03
        mov qword [TICKS], 0
        call pm_read
        mov [T0], rax
        mov edi, LAPIC
        mov dword [rdi + TMICT], 1000000
        WAIT_COUNT TICKS, 1
        PM_ELAPSED T0
        CHECK_RANGE rax, 56120, 114600, "divide by 16: 1,000,000 counts = 57273 PM ticks"
        ; ------------------------------------------------ periodic
        mov edi, LAPIC
        mov dword [rdi + TDCR], 0x0B
        mov dword [rdi + LVT_TIMER], VEC | (1 << 17)
        mov qword [TICKS], 0
        mov dword [rdi + TMICT], 1000000
        WAIT_COUNT TICKS, 1
        call pm_read
        mov [T0], rax
        mov qword [TICKS], 0
        WAIT_COUNT TICKS, 20
        PM_ELAPSED T0
        CHECK_RANGE rax, 70150, 143200, "20 periods of 1,000,000 clocks = 71591 PM ticks"
        mov edi, LAPIC
        mov eax, [rdi + TMCCT]
        CHECK_RANGE rax, 1, 1000000, "periodic count reloads"
        mov dword [rdi + TMICT], 0
        mov qword [TICKS], 0
        sti
        mov ecx, PM_HZ / 100
        call pm_delay
        cli
        CHECK64 [TICKS], 0, "initial count 0 stops the timer"
        ; ------------------------------------------------ masked
        mov edi, LAPIC
        mov dword [rdi + LVT_TIMER], VEC | (1 << 16)
        mov dword [rdi + TMICT], 100000
        sti
        mov ecx, PM_HZ / 100
        call pm_delay
        cli
        CHECK64 [TICKS], 0, "masked LVT timer delivers nothing"
        mov edi, LAPIC
        mov eax, [rdi + TMCCT]
        CHECK64 rax, 0, "masked timer still counts to 0"
        jmp finish64

%include "reset.inc"
