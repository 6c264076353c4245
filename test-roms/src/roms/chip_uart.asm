; chip_uart: the 16550A UART on COM1 (0x3F8, IRQ4), polled and in interrupt mode.
;
; Covers: the scratch register; the divisor latch behind LCR.DLAB and LCR read-back; loopback mode
; (MCR bit 4): a byte written to THR comes back in RBR with LSR.DR set and cleared by the read, and the
; modem outputs DTR/RTS/OUT1/OUT2 appear as DSR/CTS/RI/DCD in MSR bits 4-7; the FIFOs (FCR enable +
; reset, IIR bits 7:6 = 11, four bytes come back in order); IIR priority reporting "received data
; available" (0x04) with IER.ERBFI while a byte waits and "no interrupt" (0x01) once it is read; then,
; out of loopback with MCR.OUT2 set (the PC's interrupt gate), the THR-empty interrupt through the 8259A
; on IRQ4: it fires as soon as IER.ETBEI is set, reading IIR (0x02) clears it, and writing THR (the byte
; goes to the attached terminal) makes it fire again.
; 16550A datasheet (register map, loopback, FIFO control, interrupt identification and priorities);
; 8259A datasheet (ICW/OCW). The IRQ is gated by MCR.OUT2 as on PC boards.
; qemu-args: -serial null
; QEMU: default machine (pc) and CPU; COM1 attached to a null backend.
%include "common.inc"
%include "longmode.inc"
%include "chip.inc"

COM1    equ 0x3F8
IRQS    equ LM_USER + 0x00
LASTIIR equ LM_USER + 0x08

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
uart_irq:
        push rax
        push rdx
        inc qword [IRQS]
        mov dx, COM1 + 2
        in al, dx                       ; reading IIR acknowledges a THR-empty interrupt
        movzx eax, al
        mov [LASTIIR], rax
        mov al, 0x20
        out 0x20, al
        pop rdx
        pop rax
        iretq

; uart_in reg -> rax
%macro UIN 1
        mov dx, COM1 + %1
        in al, dx
        movzx eax, al
%endmacro
%macro UOUT 2
        mov dx, COM1 + %1
        mov al, %2
        out dx, al
%endmacro

main64:
        call pic_init
        SET_GATE 0x24, uart_irq, 0x8E, 0
        UOUT 1, 0                       ; IER: nothing
        ; ------------------------------------------------ scratch, divisor latch, LCR
        UOUT 7, 0x5A
        UIN 7
        CHECK64 rax, 0x5A, "scratch register holds 0x5A"
        UOUT 3, 0x83                    ; DLAB=1, 8N1
        UOUT 0, 0x0C                    ; 9600 baud
        UOUT 1, 0x00
        UIN 0
        CHECK64 rax, 0x0C, "divisor latch low reads back"
        UOUT 3, 0x03                    ; DLAB=0, 8N1
        UIN 3
        CHECK64 rax, 0x03, "LCR reads back 8N1"
        ; ------------------------------------------------ loopback, polled
        UOUT 2, 0x00                    ; FIFOs off
        UOUT 4, 0x10                    ; loopback
        UIN 0                           ; drain
        UOUT 0, 'A'
        UIN 5
        and eax, 1
        CHECK64 rax, 1, "loopback: LSR.DR set after a write"
        UIN 0
        CHECK64 rax, 'A', "loopback: RBR returns the byte"
        UIN 5
        and eax, 1
        CHECK64 rax, 0, "loopback: LSR.DR clear after the read"
        UOUT 4, 0x1F                    ; loopback + DTR RTS OUT1 OUT2
        UIN 6
        and eax, 0xF0
        CHECK64 rax, 0xF0, "loopback: MSR shows DSR CTS RI DCD from the modem outputs"
        UOUT 4, 0x10
        UIN 6
        and eax, 0xF0
        CHECK64 rax, 0x00, "loopback: MSR modem inputs follow MCR back to 0"
        ; ------------------------------------------------ FIFOs
        UOUT 2, 0x07                    ; enable, reset both
        UIN 2
        and eax, 0xC0
        CHECK64 rax, 0xC0, "IIR bits 7:6 show the FIFOs enabled"
        UOUT 0, '1'
        UOUT 0, '2'
        UOUT 0, '3'
        UOUT 0, '4'
        UIN 0
        mov ebx, eax
        UIN 0
        shl ebx, 8
        or ebx, eax
        UIN 0
        shl ebx, 8
        or ebx, eax
        UIN 0
        shl ebx, 8
        or ebx, eax
        CHECK64 rbx, 0x31323334, "FIFO returns four bytes in order"
        ; ------------------------------------------------ IIR priorities (polled, loopback)
        UOUT 1, 0x01                    ; ERBFI
        UOUT 0, 'Z'
        UIN 2
        and eax, 0x0F
        CHECK64 rax, 0x04, "IIR: received data available"
        UIN 0
        UIN 2
        and eax, 0x0F
        CHECK64 rax, 0x01, "IIR: no interrupt after the read"
        UOUT 1, 0x00
        ; ------------------------------------------------ THR-empty interrupt through the PIC
        UOUT 2, 0x00                    ; FIFOs off
        UOUT 4, 0x0B                    ; DTR RTS OUT2, no loopback
        mov qword [IRQS], 0
        in al, 0x21
        and al, 0xEF                    ; unmask IRQ4
        out 0x21, al
        UOUT 1, 0x02                    ; ETBEI: THR is empty, so this raises the interrupt
        mov ecx, 357954                 ; wait up to 100 ms of PM time
        call wait_irq
        CHECK64 qword [IRQS], 1, "THR-empty interrupt on IRQ4"
        mov rax, [LASTIIR]
        and eax, 0x0F
        CHECK64 rax, 0x02, "IIR in the handler: THR empty"
        UOUT 0, '.'                     ; to the terminal; THR empties again
        mov ecx, 357954
        call wait_irq2
        CHECK64 qword [IRQS], 2, "a second THR-empty interrupt after a write"
        UOUT 1, 0x00
        in al, 0x21
        or al, 0x10
        out 0x21, al
        call finish64

; wait_irq: sti and spin until IRQS >= 1 or ECX PM ticks pass; returns with IF=0.
wait_irq:
        mov r8, 1
        jmp wait_common
wait_irq2:
        mov r8, 2
wait_common:
        call pm_read
        mov esi, eax
        sti
.l:     cmp [IRQS], r8
        jae .d
        call pm_read
        sub eax, esi
        and eax, 0xFFFFFF
        cmp eax, ecx
        jb .l
.d:     cli
        ret

%include "reset.inc"
