; A master boot record that echoes keys through the BIOS, for the SDL window test
; (frontends/tests/sdl_window.rs): it prints a prompt through teletype output (INT 10h AH=0Eh), says
; "READY" on the debug console (port 0xE9), then forever reads a key with INT 16h AH=00h (which waits for
; one: the keyboard's scan codes reach the BIOS through the i8042 and IRQ 1) and echoes its character on
; the screen (Enter as a new line) and on port 0xE9.
; The BIOS loads it at 0000:7C00.

bits 16
org 0x7c00

start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    sti
    mov si, prompt
    call print
    mov si, ready
.report:
    lodsb
    test al, al
    jz .keys
    out 0xe9, al
    jmp .report
.keys:
    xor ah, ah              ; wait for a key: AL = character, AH = scan code
    int 0x16
    test al, al
    jz .keys                ; a key without a character
    out 0xe9, al
    cmp al, 13
    jne .echo
    mov si, newline
    call print
    jmp .keys
.echo:
    mov ah, 0x0e
    mov bx, 0x000e          ; page 0, yellow (graphics modes only; text keeps the cell's colour)
    int 0x10
    jmp .keys

; Prints the zero-terminated string at SI through teletype output.
print:
    lodsb
    test al, al
    jz .done
    mov ah, 0x0e
    mov bx, 0x0007
    int 0x10
    jmp print
.done:
    ret

prompt:  db "FERRITE: type here> ", 0
newline: db 13, 10, 0
ready:   db "READY", 10, 0

times 510-($-$$) db 0
dw 0xaa55
