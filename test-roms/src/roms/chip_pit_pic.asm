; chip_pit_pic: the 8259A pair and the 8254 PIT, timed against the ACPI PM timer.
;
; Covers: PIC initialization (ICW1-ICW4, vector bases 0x20/0x28), IMR read-back, IRR/ISR through OCW3
; (ISR bit 0 set inside the IRQ0 handler, clear after the non-specific EOI); PIT counter 0 in mode 2
; (rate generator) at 1193 counts: 100 periods of IRQ0 measured with the PM timer (expected 100 x 1193 /
; 1.193182 MHz = 99.98 ms = 357,890 PM ticks), IRQ0 also arrives during a busy loop (50 ms of PM ticks
; -> about 50 IRQs), counter latch in mode 2 reads a value in 1..1193; masking IRQ0 in the IMR stops
; delivery; mode 0 (interrupt on terminal count): the read-back status byte (OUT low, mode 0, LSB/MSB
; access) while counting, exactly one IRQ0 after 4096 counts (3.433 ms = 12,288 PM ticks) and OUT high
; afterwards, no second interrupt (one-shot).
; Timing ranges accept up to 100% late (QEMU TCG runs on the host clock) but never early by more than 2%.
; Intel 8259A datasheet (ICW/OCW formats), Intel 82C54 datasheet (modes 0 and 2, counter latch, read-back
; command and status byte), ACPI 6.x 4.8.2.1 (PM timer), PIIX4 datasheet (PMBA).
; qemu-args: -icount shift=3,sleep=off -rtc clock=vm
; QEMU: default machine (pc) and CPU.
%include "common.inc"
%include "longmode.inc"
%include "chip.inc"

TICKS   equ LM_USER + 0x00
T0      equ LM_USER + 0x08
ISR_IN  equ LM_USER + 0x10
TMP     equ LM_USER + 0x18

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
irq0_handler:
        push rax
        inc qword [TICKS]
        mov al, 0x0B                    ; OCW3: read ISR
        out 0x20, al
        in al, 0x20
        movzx eax, al
        mov [ISR_IN], rax
        mov al, 0x0A                    ; OCW3: back to IRR
        out 0x20, al
        mov al, 0x20                    ; non-specific EOI
        out 0x20, al
        pop rax
        iretq

main64:
        PM_INIT
        call pic_init
        SET_GATE 0x20, irq0_handler, 0x8E, 0
        ; ------------------------------------------------ PIC registers
        in al, 0x21
        movzx eax, al
        CHECK64 rax, 0xFF, "IMR reads back all masked"
        mov al, 0xFE
        out 0x21, al
        in al, 0x21
        movzx eax, al
        CHECK64 rax, 0xFE, "IMR reads back 0xFE"
        ; ------------------------------------------------ PIT mode 2 at 1193 counts
        mov qword [TICKS], 0
        mov al, 0x34                    ; counter 0, LSB then MSB, mode 2, binary
        out 0x43, al
        mov al, 1193 & 0xFF
        out 0x40, al
        mov al, 1193 >> 8
        out 0x40, al
        WAIT_COUNT TICKS, 1
        CHECK64 [ISR_IN], 1, "ISR bit 0 set in the IRQ0 handler"
        mov al, 0x0B
        out 0x20, al
        in al, 0x20
        movzx eax, al
        CHECK64 rax, 0, "ISR clear after EOI"
        mov al, 0x0A
        out 0x20, al
        call pm_read
        mov [T0], rax
        mov qword [TICKS], 0
        WAIT_COUNT TICKS, 100
        PM_ELAPSED T0
        CHECK_RANGE rax, 350000, 716000, "100 IRQ0 periods of mode 2 / 1193 = 357890 PM ticks"
        ; IRQ0 during a busy loop (no HLT).
        mov qword [TICKS], 0
        sti
        mov ecx, PM_HZ / 20
        call pm_delay
        cli
        CHECK_RANGE [TICKS], 5, 51, "IRQ0s arrive during a 50 ms busy loop (at most 51)"
        ; Counter latch.
        mov al, 0x00                    ; latch counter 0
        out 0x43, al
        in al, 0x40
        mov ah, al
        in al, 0x40
        xchg al, ah
        movzx eax, ax
        CHECK_RANGE rax, 1, 1193, "latched mode-2 count in 1..1193"
        ; Masking IRQ0 stops delivery.
        mov al, 0xFF
        out 0x21, al
        mov qword [TICKS], 0
        sti
        mov ecx, PM_HZ / 100
        call pm_delay
        cli
        CHECK64 [TICKS], 0, "masked IRQ0 is not delivered"
        ; ------------------------------------------------ mode 0 one-shot
        ; The masked IRQ0 left an edge latched in the IRR: switch the counter to mode 0 (OUT goes low,
        ; no new edge) and take that stale request first.
        mov al, 0x30                    ; counter 0, LSB then MSB, mode 0
        out 0x43, al
        mov al, 0xFE
        out 0x21, al
        sti
        mov ecx, 36                     ; ~10 us
        call pm_delay
        cli
        mov al, 0xFF
        out 0x21, al
        mov al, 0x30
        out 0x43, al
        mov al, 0x00
        out 0x40, al
        mov al, 0x10                    ; 0x1000 counts
        out 0x40, al
        call pm_read
        mov [T0], rax
        mov ecx, 10                     ; let the count load (a few PIT clocks)
        call pm_delay
        mov al, 0xE2                    ; read-back: status only, counter 0
        out 0x43, al
        in al, 0x40
        movzx eax, al
        CHECK64 rax, 0x30, "mode 0 status while counting: OUT low, RW=3, mode 0"
        mov al, 0x00
        out 0x43, al
        in al, 0x40
        mov ah, al
        in al, 0x40
        xchg al, ah
        movzx eax, ax
        CHECK_RANGE rax, 1, 0x1000, "mode 0 count counting down"
        ; the IRR has the edge pending once OUT rises; unmask and wait
        mov qword [TICKS], 0
        mov al, 0xFE
        out 0x21, al
        WAIT_COUNT TICKS, 1
        PM_ELAPSED T0
        CHECK_RANGE rax, 12040, 24600, "mode 0 terminal count after 4096 counts = 12288 PM ticks"
        mov al, 0xE2
        out 0x43, al
        in al, 0x40
        movzx eax, al
        CHECK64 rax, 0xB0, "mode 0 status after terminal count: OUT high"
        sti
        mov ecx, PM_HZ / 50             ; 20 ms (> 4096 counts again)
        call pm_delay
        cli
        CHECK64 [TICKS], 1, "mode 0 interrupts only once"
        mov al, 0xFF
        out 0x21, al
        jmp finish64

%include "reset.inc"
