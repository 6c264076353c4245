; chip_pci: PCI configuration mechanism #1 on bus 0 of the i440FX/PIIX board.
;
; Covers: CONFIG_ADDRESS read-back (dword at 0xCF8), enable bit clear -> CONFIG_DATA reads all ones;
; 00:00.0 i440FX host bridge (8086:1237, class 06/00), 00:01.0 PIIX3 ISA bridge (8086:7000, class
; 06/01, multi-function header), 00:01.1 PIIX3 IDE (8086:7010), 00:01.3 PIIX4 PM (8086:7113); byte and
; word accesses at CONFIG_DATA + 1..3; absent device and bus 1 read all ones; a scan of bus 0 finds at
; least those four functions; read-only IDs ignore writes; PIRQRC A (0x60) and the interrupt line
; register are read/write; BAR sizing of the IDE bus-master BAR4 (16-byte I/O: 0xFFFFFFF1), then
; assigning it 0xC000 and enabling I/O decode makes the bus-master registers answer there (descriptor
; pointer read-back), disabling decode makes the port float (all ones); PIIX4 PMBA programming enables the
; PM timer, which counts.
; PCI Local Bus 3.0 3.2.2.3.2 (mechanism #1), 6.1-6.2.5 (header, command, BARs and sizing); Intel 82371SB
; (PIIX3) and 82371AB (PIIX4) datasheets (IDs, PIRQRC, BMIBA, PMBA); Intel 82441FX datasheet.
; QEMU: default machine (pc) and CPU.
%include "common.inc"
%include "longmode.inc"
%include "chip.inc"

COUNT   equ LM_USER + 0x00
T0      equ LM_USER + 0x08

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
main64:
        mov dx, 0xCF8
        mov eax, 0x80000000
        out dx, eax
        in eax, dx
        CHECK64 rax, 0x80000000, "CONFIG_ADDRESS reads back"
        mov eax, 0x00000000
        out dx, eax
        mov dx, 0xCFC
        in eax, dx
        CHECK64 rax, 0xFFFFFFFF, "enable bit clear: all ones"
        PCI_RD32 0x00, 0x00
        CHECK64 rax, 0x12378086, "00:00.0 i440FX 8086:1237"
        PCI_RD32 0x00, 0x08
        shr eax, 16
        CHECK64 rax, 0x0600, "00:00.0 class host bridge"
        PCI_RD32 0x08, 0x00
        CHECK64 rax, 0x70008086, "00:01.0 PIIX3 8086:7000"
        PCI_RD32 0x08, 0x08
        shr eax, 16
        CHECK64 rax, 0x0601, "00:01.0 class ISA bridge"
        PCI_RD32 0x08, 0x0C
        shr eax, 16
        and eax, 0x80
        CHECK64 rax, 0x80, "00:01.0 multi-function header"
        PCI_RD32 0x09, 0x00
        CHECK64 rax, 0x70108086, "00:01.1 PIIX3 IDE 8086:7010"
        PCI_RD32 0x0B, 0x00
        CHECK64 rax, 0x71138086, "00:01.3 PIIX4 PM 8086:7113"
        ; byte and word lanes
        mov dx, 0xCF8
        mov eax, 0x80000000
        out dx, eax
        mov dx, 0xCFE
        in ax, dx
        movzx eax, ax
        CHECK64 rax, 0x1237, "word read at 0xCFE"
        mov dx, 0xCFD
        in al, dx
        movzx eax, al
        CHECK64 rax, 0x80, "byte read at 0xCFD"
        PCI_RD32 0xF8, 0x00
        CHECK64 rax, 0xFFFFFFFF, "absent 00:1F.0 reads all ones"
        mov dx, 0xCF8
        mov eax, 0x80010000
        out dx, eax
        mov dx, 0xCFC
        in eax, dx
        CHECK64 rax, 0xFFFFFFFF, "bus 1 reads all ones"
        ; scan bus 0
        mov qword [COUNT], 0
        xor ebx, ebx
.scan:  mov eax, ebx
        shl eax, 8
        or eax, 0x80000000
        mov dx, 0xCF8
        out dx, eax
        mov dx, 0xCFC
        in eax, dx
        cmp ax, 0xFFFF
        je .next
        inc qword [COUNT]
.next:  inc ebx
        cmp ebx, 256
        jb .scan
        CHECK_RANGE [COUNT], 4, 256, "bus 0 scan finds at least 4 functions"
        ; read-only IDs, read/write registers
        PCI_WR32 0x00, 0x00, 0
        PCI_RD32 0x00, 0x00
        CHECK64 rax, 0x12378086, "IDs are read-only"
        PCI_WR8 0x08, 0x60, 0x0B
        PCI_RD32 0x08, 0x60
        and eax, 0xFF
        CHECK64 rax, 0x0B, "PIRQRC A read/write"
        PCI_WR8 0x08, 0x60, 0x80
        PCI_WR8 0x09, 0x3C, 0x0E
        PCI_RD32 0x09, 0x3C
        and eax, 0xFF
        CHECK64 rax, 0x0E, "interrupt line read/write"
        ; BAR sizing and decode
        PCI_WR32 0x09, 0x20, 0xFFFFFFFF
        PCI_RD32 0x09, 0x20
        CHECK64 rax, 0xFFFFFFF1, "BAR4 sizing: 16-byte I/O"
        PCI_WR32 0x09, 0x20, 0xC001
        PCI_RD32 0x09, 0x20
        CHECK64 rax, 0xC001, "BAR4 = 0xC000"
        PCI_RD32 0x09, 0x04
        or eax, 1
        mov ebx, eax
        PCI_WR32 0x09, 0x04, ebx
        mov dx, 0xC004
        mov eax, 0x12345678
        out dx, eax
        in eax, dx
        CHECK64 rax, 0x12345678, "bus-master PRD pointer at BAR4 + 4"
        PCI_RD32 0x09, 0x04
        and eax, ~1
        mov ebx, eax
        PCI_WR32 0x09, 0x04, ebx
        mov dx, 0xC004
        in eax, dx
        CHECK64 rax, 0xFFFFFFFF, "I/O decode off: port floats"
        ; PM timer through PMBA
        PM_INIT
        PCI_RD32 0x0B, 0x40
        CHECK64 rax, PM_BASE | 1, "PMBA reads back"
        call pm_read
        mov [T0], rax
        mov ecx, 1000
.spin:  loop .spin
        PM_ELAPSED T0
        CHECK_RANGE rax, 1, 0x7FFFFF, "PM timer counts"
        jmp finish64

%include "reset.inc"
