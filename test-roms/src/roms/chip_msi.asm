; chip_msi: QEMU's edu PCI device found on bus 0, its interrupts through INTx (I/O APIC) and MSI (local
; APIC), and its DMA engine, in long mode.
; qemu-args: -device edu
; ferrite-devices: edu
;
; Covers: a scan of bus 0 finds 1234:11e8; BAR0 sizing (1 MiB, 32-bit memory) and assignment at BAR,
; memory + bus-master decode; identification 0x010000ED, liveness inversion, 10! = 3628800 after the
; computing bit (status bit 0) clears. INTx: the interrupt pin register says INTA#, the slot's PIRQ is
; (slot + pin - 2) mod 4 (the PIIX swizzle), PIRQRC is programmed to IRQ 11 as a BIOS would and reads
; back; an I/O APIC entry for the line (level) delivers vector 0x51 when the raise register is written;
; the handler reads the interrupt status (the value raised) and acknowledges it, after which the line is
; idle: no second delivery, remote IRR clear after the EOI; with the command register's interrupt
; disable bit set a raise delivers nothing until the bit is cleared, then the pending condition is
; delivered. MSI: the capability (ID 5) is found by walking the list, is 64-bit, and is programmed with
; address 0xFEE00000 | (local APIC ID << 12) and data 0x0061 (fixed, edge); a raise delivers vector 0x61
; with TMR clear (edge) and ISR set in the handler, INTx stays quiet; a factorial with status bit 7 set
; raises interrupt status 0x001 through MSI. DMA: 256 bytes from RAM into the device's buffer at 0x40000
; (command 1, polled until bit 0 clears) and back to another RAM area (command 3 | 4), completion MSI
; with interrupt status 0x100, bytes compared.
; QEMU docs/specs/edu.rst; PCI Local Bus 3.0 6.2 (command: bit 10 interrupt disable; status), 6.7
; (capability list), 6.8.1 (MSI capability); SDM Vol. 3A 11.11 (MSI address/data format); 82093AA
; datasheet (redirection entries); Intel 82371SB (PIIX3) PIRQRC.
;
; QEMU quirk (-DQEMU_QUIRKS): on a PC with an I/O APIC, PIRQA-D are wired to I/O APIC pins 16-19 (active
; low, level), which is what the MP and ACPI tables of the i440FX/PIIX board say and what Ferrite models.
; QEMU's PIIX3 instead forwards the PIRQRC-routed ISA IRQ to the I/O APIC's ISA pin of that number
; (active high), so under QEMU the ROM programs pin 11 instead of 16 + PIRQ.
%include "common.inc"
%include "longmode.inc"
%include "chip.inc"

BAR         equ 0xFEB00000
CFGADDR     equ LM_USER + 0x00      ; dword: 0x80000000 | devfn << 8 of edu
INTX_COUNT  equ LM_USER + 0x08
INTX_STAT   equ LM_USER + 0x10
MSI_COUNT   equ LM_USER + 0x18
MSI_STAT    equ LM_USER + 0x20
MSI_TMR     equ LM_USER + 0x28
MSI_ISR     equ LM_USER + 0x30
PIRQ        equ LM_USER + 0x38
PIN_GSI     equ LM_USER + 0x40
CAP         equ LM_USER + 0x48
T0          equ LM_USER + 0x50
SRC_BUF     equ 0x30000
DST_BUF     equ 0x31000
DMA_LEN     equ 256
VEC_INTX    equ 0x51
VEC_MSI     equ 0x61
ROUTE_IRQ   equ 11
TIMEOUT     equ PM_HZ * 3 / 10      ; 300 ms: QEMU's edu finishes a DMA after 100 ms of virtual time

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
; cfg_rd: eax = dword register ecx of edu.
cfg_rd:
        push rdx
        mov eax, [CFGADDR]
        or eax, ecx
        and eax, ~3
        mov dx, 0xCF8
        out dx, eax
        mov dx, 0xCFC
        in eax, dx
        pop rdx
        ret

; cfg_wr: dword register ecx of edu = eax.
cfg_wr:
        push rdx
        push rax
        mov eax, [CFGADDR]
        or eax, ecx
        and eax, ~3
        mov dx, 0xCF8
        out dx, eax
        pop rax
        mov dx, 0xCFC
        out dx, eax
        pop rdx
        ret

; cfg_wr16: word register ecx (even) of edu = ax.
cfg_wr16:
        push rdx
        push rax
        mov eax, [CFGADDR]
        or eax, ecx
        and eax, ~3
        mov dx, 0xCF8
        out dx, eax
        pop rax
        mov edx, ecx
        and edx, 2
        add edx, 0xCFC
        out dx, ax
        pop rdx
        ret

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

; wait_ge: waits with interrupts enabled until qword [rdi] >= rsi, at most TIMEOUT. Clobbers rax, rcx,
; rdx.
wait_ge:
        call pm_read
        mov ecx, eax
.l:     cmp [rdi], rsi
        jae .d
        sti
        nop
        cli
        call pm_read
        sub eax, ecx
        and eax, 0xFFFFFF
        cmp eax, TIMEOUT
        jb .l
.d:     ret

; poll_clear: waits until bit 0 of the dword at rdi is clear, at most TIMEOUT; rax = the last value read.
; Clobbers rcx, rdx, rsi.
poll_clear:
        call pm_read
        mov ecx, eax
.l:     mov esi, [rdi]
        test esi, 1
        jz .d
        call pm_read
        sub eax, ecx
        and eax, 0xFFFFFF
        cmp eax, TIMEOUT
        jb .l
.d:     mov eax, esi
        ret

; delay_irq: 20 ms with interrupts enabled. Clobbers rax, rcx, rdx, rsi.
delay_irq:
        sti
        mov ecx, PM_HZ / 50
        call pm_delay
        cli
        ret

intx_handler:
        push rax
        push rdi
        inc qword [INTX_COUNT]
        mov edi, BAR
        mov eax, [rdi + 0x24]
        mov [INTX_STAT], rax
        mov [rdi + 0x64], eax               ; acknowledge: INTx goes idle
        mov edi, LAPIC
        mov dword [rdi + 0xB0], 0           ; EOI (level: clears remote IRR)
        pop rdi
        pop rax
        iretq

msi_handler:
        push rax
        push rdi
        inc qword [MSI_COUNT]
        mov edi, LAPIC
        mov eax, [rdi + 0x180 + 0x10 * (VEC_MSI / 32)]   ; TMR
        shr eax, VEC_MSI % 32
        and eax, 1
        mov [MSI_TMR], rax
        mov eax, [rdi + 0x100 + 0x10 * (VEC_MSI / 32)]   ; ISR
        shr eax, VEC_MSI % 32
        and eax, 1
        mov [MSI_ISR], rax
        mov edi, BAR
        mov eax, [rdi + 0x24]
        mov [MSI_STAT], rax
        mov [rdi + 0x64], eax
        mov edi, LAPIC
        mov dword [rdi + 0xB0], 0
        pop rdi
        pop rax
        iretq

main64:
        PM_INIT
        call pic_init                       ; 8259s masked, local APIC software-enabled
        SET_GATE VEC_INTX, intx_handler, 0x8E, 0
        SET_GATE VEC_MSI, msi_handler, 0x8E, 0
        ; ---- find edu on bus 0
        xor ebx, ebx
.scan:  mov eax, ebx
        shl eax, 8
        or eax, 0x80000000
        mov [CFGADDR], eax
        xor ecx, ecx
        call cfg_rd
        cmp eax, 0x11E81234
        je .found
        inc ebx
        cmp ebx, 256
        jb .scan
        CHECK64 rbx, -1, "edu 1234:11e8 on bus 0"
        jmp finish64
.found: CHECK64 1, 1, "edu 1234:11e8 on bus 0"
        ; ---- BAR0
        mov ecx, 0x10
        mov eax, 0xFFFFFFFF
        call cfg_wr
        call cfg_rd
        CHECK64 rax, 0xFFF00000, "BAR0 sizing: 1 MiB 32-bit memory"
        mov eax, BAR
        call cfg_wr
        call cfg_rd
        CHECK64 rax, BAR, "BAR0 assigned"
        mov ecx, 0x04
        mov ax, 0x0006                      ; memory space, bus master
        call cfg_wr16
        mov edi, BAR
        mov eax, [rdi]
        CHECK64 rax, 0x010000ED, "identification 0x010000ED"
        mov dword [rdi + 4], 0x12345678
        mov eax, [rdi + 4]
        CHECK64 rax, 0xEDCBA987, "liveness check inverts"
        mov dword [rdi + 0x08], 10
        add rdi, 0x20
        call poll_clear
        and eax, 1
        CHECK64 rax, 0, "factorial: computing bit clears"
        mov edi, BAR
        mov eax, [rdi + 0x08]
        CHECK64 rax, 3628800, "10! = 3628800"
        ; ---- INTx through the I/O APIC
        mov ecx, 0x3C
        call cfg_rd
        shr eax, 8
        and eax, 0xFF
        CHECK64 rax, 1, "interrupt pin INTA#"
        mov eax, [CFGADDR]
        shr eax, 11
        and eax, 0x1F                       ; slot
        add eax, 1 - 2                      ; + pin - 2
        and eax, 3
        mov [PIRQ], rax
        ; PIRQRC[pirq] (00:01.0 register 0x60 + pirq) = IRQ 11
        mov dx, 0xCF8
        mov eax, 0x80000860
        out dx, eax
        mov edx, [PIRQ]
        add edx, 0xCFC
        mov al, ROUTE_IRQ
        out dx, al
        in al, dx
        movzx eax, al
        CHECK64 rax, ROUTE_IRQ, "PIRQRC routes the slot's PIRQ to IRQ 11"
%ifdef QEMU_QUIRKS
        mov qword [PIN_GSI], ROUTE_IRQ
        mov ebx, VEC_INTX | (1 << 15)       ; level, active high
%else
        mov rax, [PIRQ]
        add rax, 16
        mov [PIN_GSI], rax
        mov ebx, VEC_INTX | (1 << 15) | (1 << 13) ; level, active low
%endif
        mov ecx, [PIN_GSI]
        lea ecx, [0x10 + 2 * ecx + 1]
        xor eax, eax                        ; destination APIC 0
        call ioapic_write
        dec ecx
        mov eax, ebx
        call ioapic_write
        mov qword [INTX_COUNT], 0
        mov edi, BAR
        mov dword [rdi + 0x60], 0x42        ; raise
        mov edi, INTX_COUNT
        mov esi, 1
        call wait_ge
        CHECK64 [INTX_COUNT], 1, "INTx: vector 0x51 through the I/O APIC"
        CHECK64 [INTX_STAT], 0x42, "INTx: interrupt status holds the raised value"
        mov edi, BAR
        mov eax, [rdi + 0x24]
        CHECK64 rax, 0, "interrupt status clear after acknowledge"
        call delay_irq
        CHECK64 [INTX_COUNT], 1, "INTx idle after acknowledge: one delivery"
        mov ecx, [PIN_GSI]
        lea ecx, [0x10 + 2 * ecx]
        call ioapic_read
        and eax, 1 << 14
        CHECK64 rax, 0, "remote IRR clear after the EOI"
        ; interrupt disable (command bit 10)
        mov ecx, 0x04
        mov ax, 0x0406
        call cfg_wr16
        mov qword [INTX_COUNT], 0
        mov edi, BAR
        mov dword [rdi + 0x60], 0x08
        call delay_irq
        CHECK64 [INTX_COUNT], 0, "interrupt disable: no INTx"
        mov ecx, 0x04
        call cfg_rd
        shr eax, 16 + 3
        and eax, 1
        CHECK64 rax, 1, "status register: interrupt status set while disabled"
        mov ecx, 0x04
        mov ax, 0x0006
        call cfg_wr16
        mov edi, INTX_COUNT
        mov esi, 1
        call wait_ge
        CHECK64 [INTX_COUNT], 1, "interrupt enable: the pending condition is delivered"
        CHECK64 [INTX_STAT], 0x08, "INTx: second status value"
        mov ecx, [PIN_GSI]
        lea ecx, [0x10 + 2 * ecx]
        mov eax, VEC_INTX | (1 << 16)       ; mask the entry
        call ioapic_write
        ; ---- MSI
        mov ecx, 0x34
        call cfg_rd
        and eax, 0xFC
        mov ebx, 48                         ; list length bound
.cap:   test eax, eax
        jz .nocap
        mov ecx, eax
        mov [CAP], rax
        call cfg_rd
        cmp al, 0x05
        je .gotcap
        shr eax, 8
        and eax, 0xFC
        dec ebx
        jnz .cap
.nocap: CHECK64 0, 1, "MSI capability in the list"
        jmp finish64
.gotcap:
        CHECK64 1, 1, "MSI capability in the list"
        shr eax, 16 + 7
        and eax, 1
        CHECK64 rax, 1, "MSI: 64-bit address capable"
        mov edi, LAPIC
        mov eax, [rdi + 0x20]
        shr eax, 24                         ; local APIC ID
        shl eax, 12
        or eax, 0xFEE00000                  ; physical destination, no redirection hint
        mov ecx, [CAP]
        add ecx, 4
        call cfg_wr
        add ecx, 4
        xor eax, eax
        call cfg_wr                         ; upper address
        add ecx, 4
        mov ax, VEC_MSI                     ; fixed, edge
        call cfg_wr16
        mov ecx, [CAP]
        add ecx, 2
        mov ax, 1                           ; MSI enable, one vector
        call cfg_wr16
        mov ecx, [CAP]
        call cfg_rd
        shr eax, 16
        and eax, 0x71
        CHECK64 rax, 1, "MSI enabled, one vector allocated"
        mov qword [MSI_COUNT], 0
        mov qword [INTX_COUNT], 0
        mov edi, BAR
        mov dword [rdi + 0x60], 0x77
        mov edi, MSI_COUNT
        mov esi, 1
        call wait_ge
        CHECK64 [MSI_COUNT], 1, "MSI: vector 0x61 delivered"
        CHECK64 [MSI_STAT], 0x77, "MSI: interrupt status holds the raised value"
        CHECK64 [MSI_TMR], 0, "MSI: edge (TMR clear)"
        CHECK64 [MSI_ISR], 1, "MSI: in service in the handler"
        CHECK64 [INTX_COUNT], 0, "MSI: no INTx"
        ; factorial completion interrupt
        mov edi, BAR
        mov dword [rdi + 0x20], 0x80
        mov dword [rdi + 0x08], 5
        mov edi, MSI_COUNT
        mov esi, 2
        call wait_ge
        CHECK64 [MSI_COUNT], 2, "factorial completion: MSI"
        CHECK64 [MSI_STAT], 0x001, "factorial completion: status 0x001"
        mov edi, BAR
        mov dword [rdi + 0x20], 0
        mov eax, [rdi + 0x08]
        CHECK64 rax, 120, "5! = 120"
        ; ---- DMA: RAM -> buffer -> RAM
        mov edi, SRC_BUF
        xor ecx, ecx
.fill:  mov eax, ecx
        imul eax, eax, 37
        add eax, 11
        mov [rdi + rcx], al
        mov byte [DST_BUF + rcx], 0
        inc ecx
        cmp ecx, DMA_LEN
        jb .fill
        mov edi, BAR
        mov qword [rdi + 0x80], SRC_BUF
        mov qword [rdi + 0x88], 0x40000
        mov qword [rdi + 0x90], DMA_LEN
        mov qword [rdi + 0x98], 1           ; start, RAM to device, no interrupt
        add rdi, 0x98
        call poll_clear
        and eax, 1
        CHECK64 rax, 0, "DMA to the device completes"
        mov edi, BAR
        mov qword [rdi + 0x80], 0x40000
        mov qword [rdi + 0x88], DST_BUF
        mov qword [rdi + 0x90], DMA_LEN
        mov qword [rdi + 0x98], 1 | 2 | 4   ; start, device to RAM, interrupt
        mov edi, MSI_COUNT
        mov esi, 3
        call wait_ge
        CHECK64 [MSI_COUNT], 3, "DMA completion: MSI"
        CHECK64 [MSI_STAT], 0x100, "DMA completion: status 0x100"
        mov edi, BAR
        mov rax, [rdi + 0x98]
        and eax, 1
        CHECK64 rax, 0, "DMA to RAM completes"
        mov esi, SRC_BUF
        mov edi, DST_BUF
        mov ecx, DMA_LEN
        cld
        repe cmpsb
        mov eax, ecx
        CHECK64 rax, 0, "DMA round trip: 256 bytes equal"
        movzx eax, byte [DST_BUF + DMA_LEN - 1]
        movzx ebx, byte [SRC_BUF + DMA_LEN - 1]
        CHECK64 rax, rbx, "DMA round trip: last byte"
        jmp finish64

%include "reset.inc"
