; A master boot record that prints through the BIOS's video services (INT 10h), for the SeaBIOS disk
; boot tests (frontends/tests/bios_boot.rs):
;  - a line through teletype output (AH=0Eh) at the cursor the BIOS left,
;  - three 'X' cells with attribute 1Eh (yellow on blue) at row 20, column 10 through AH=02h (set cursor)
;    and AH=09h (write character and attribute),
;  - the cursor position read back with AH=03h, reported on the debug console (port 0xE9) with the
;    text "DONE r c" so the test knows the program finished; then it halts with interrupts on.
; The BIOS loads it at 0000:7C00 with DL = the boot drive.

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
    mov si, msg
.next:
    lodsb
    test al, al
    jz .cells
    mov ah, 0x0e
    mov bx, 0x0007
    int 0x10
    jmp .next
.cells:
    mov ah, 0x02            ; set cursor: page 0, row 20, column 10
    xor bh, bh
    mov dx, 0x140a
    int 0x10
    mov ax, 0x0958          ; write 'X' with attribute, 3 times
    mov bx, 0x001e
    mov cx, 3
    int 0x10
    mov ah, 0x03            ; read the cursor back (AH=09h does not move it)
    xor bh, bh
    int 0x10
    mov si, done
.report:
    lodsb
    test al, al
    jz .pos
    out 0xe9, al
    jmp .report
.pos:
    mov al, dh
    call hex
    mov al, ' '
    out 0xe9, al
    mov al, dl
    call hex
    mov al, 10
    out 0xe9, al
.halt:
    hlt
    jmp .halt

; Prints AL as two hex digits on port 0xE9.
hex:
    push ax
    shr al, 4
    call .digit
    pop ax
    and al, 0x0f
.digit:
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 7
.out:
    out 0xe9, al
    ret

msg:  db "FERRITE MBR: hello through INT 10h", 13, 10, 0
done: db "DONE ", 0

times 510-($-$$) db 0
dw 0xaa55
