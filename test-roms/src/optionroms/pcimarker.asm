; pcimarker: a PCI option ROM of our own, for QEMU's educational device (`--device edu`, 1234:11E8),
; attached to it with `--device edu,romfile=FILE`. It tests the path a PCI card's ROM takes into a PC:
; SeaBIOS sizes and places the function's ROM BAR while it assigns PCI resources, then (its option ROM
; scan, for a function it has no driver of its own for) enables the ROM BAR, finds the 55 AA header and,
; through the pointer at 0x18, the PCI data structure whose vendor and device IDs and code type 0 (x86)
; must match the function; it copies the image below 1 MiB, checks that its bytes sum to zero and,
; because the image has a PnP expansion header (pointer at 0x1A), far-calls the init entry at offset 3
; with AX = the function's bus/device/function number. (A ROM without a PnP header is not initialised
; there: SeaBIOS calls its offset 3 later as a legacy boot connection vector, with AX = 0.) The PnP
; header has no boot vectors, so the ROM adds nothing to the boot menu.
;
; The init entry prints "pcimarker: init bdf=XXXX" and a newline on port 0x402, the debug console
; SeaBIOS logs to (`ferrite run --bios-log stdout`), XXXX being AX in hex, and returns.
;
; The ROM's last byte is the checksum byte: `firmware::optionrom::pcimarker()` sets it so the bytes sum
; to zero, and the PnP header's checksum byte likewise.

BITS 16
ORG 0

DEBUG_PORT      equ 0x402
ROM_SIZE        equ 512
VENDOR          equ 0x1234
DEVICE          equ 0x11E8

rom_start:
    db 0x55, 0xAA
    db ROM_SIZE / 512
    jmp init                        ; offset 3: the init entry
    times 0x18 - ($ - $$) db 0
    dw pcir - rom_start             ; 0x18: the PCI data structure
    dw pnp - rom_start              ; 0x1A: the PnP expansion header

    align 4
pcir:                               ; PCI Firmware Specification 3.0, 5.1.2
    db 'PCIR'
    dw VENDOR
    dw DEVICE
    dw 0                            ; device list pointer: none
    dw 0x18                         ; length of this structure
    db 0                            ; structure revision
    db 0x00, 0x00, 0xFF             ; class code: programming interface, subclass, base class (FF0000)
    dw ROM_SIZE / 512               ; image length in 512-byte units
    dw 1                            ; revision of the code
    db 0                            ; code type: x86 (PC-AT compatible)
    db 0x80                         ; indicator: the last image
    dw 0                            ; reserved

    align 16
pnp:                                ; PnP BIOS Specification 1.0A, appendix A
    db '$PnP'
    db 1                            ; structure revision
    db 2                            ; length in 16-byte units
    dw 0                            ; next header: none
    db 0                            ; reserved
    db 0                            ; checksum of the 32 bytes: set by firmware::optionrom::pcimarker()
    dd 0                            ; device identifier
    dw 0                            ; manufacturer string: none
    dw 0                            ; product name: none
    db 0xFF, 0x00, 0x00             ; device type: other
    db 0x00                         ; device indicators
    dw 0                            ; boot connection vector: none
    dw 0                            ; disconnect vector: none
    dw 0                            ; boot entry vector: none
    dw 0                            ; reserved
    dw 0                            ; static resource information vector: none

init:
    push ax
    push bx
    push cx
    push dx
    push si
    push ds
    mov bx, ax                      ; the bus/device/function SeaBIOS passes
    push cs
    pop ds
    mov dx, DEBUG_PORT
    mov si, msg
    call puts
    mov cx, 4
.digit:
    rol bx, 4
    mov al, bl
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '0' - 10
.out:
    out dx, al
    loop .digit
    mov al, 10
    out dx, al
    pop ds
    pop si
    pop dx
    pop cx
    pop bx
    pop ax
    retf

; Writes the NUL-terminated string at DS:SI to port DX.
puts:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp puts
.done:
    ret

msg: db 'pcimarker: init bdf=', 0

    times ROM_SIZE - 1 - ($ - $$) db 0
    db 0                            ; checksum byte, set by firmware::optionrom::pcimarker()
