; A master boot record that switches to VGA mode 13h (320x200, 256 colours, chained) through INT 10h
; and draws, for the graphics screenshot test (frontends/tests/bios_boot.rs):
;  - pixel (10, 20) in colour 4 through the BIOS (AH=0Ch, write graphics pixel),
;  - 16 pixels of colour 15 at row 100 from column 150, stored directly at A000:(100*320+150),
;  - pixel (319, 199) in colour 1, stored directly.
; Then "DONE" on the debug console (port 0xE9) and a halt with interrupts on.

bits 16
org 0x7c00

start:
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    mov ax, 0x0013
    int 0x10
    mov ax, 0x0c04          ; write pixel: colour 4
    xor bh, bh
    mov cx, 10
    mov dx, 20
    int 0x10
    mov ax, 0xa000
    mov es, ax
    mov di, 100*320+150
    mov al, 15
    mov cx, 16
    cld
    rep stosb
    mov byte [es:199*320+319], 1
    mov si, done
.report:
    lodsb
    test al, al
    jz .halt
    out 0xe9, al
    jmp .report
.halt:
    hlt
    jmp .halt

done: db "DONE", 10, 0

times 510-($-$$) db 0
dw 0xaa55
