; demo: Ferrite's built-in default guest (what `ferrite run` boots without arguments).
;
; A tiny tour of the PC boot path: starts at the reset vector in real mode, switches to 32-bit
; protected mode, then to 64-bit long mode (identity-mapped 4-level paging, see longmode.inc), and in
; 64-bit mode computes the primes below 100 with a sieve and a Fibonacci number that needs 64 bits.
; Every line goes to the debug console (port 0xE9) and to COM1 (16550 UART at 0x3F8; the transmitter
; holding register is written only once LSR bit 5 at 0x3FD says it is empty, with a bounded wait so a
; missing UART cannot hang the demo). Ends by writing 0 to the isa-debug-exit port 0xF4 (exit status 1).
; Any unexpected exception in 64-bit mode is reported by longmode.inc's handler and exits non-zero.
; SDM Vol. 3A 9.1 (reset state), 9.9 (mode switching), 9.8.5 (IA-32e initialisation).
; QEMU: default CPU (qemu64). Try it: add `-serial stdio` instead of `-serial none` to see COM1.
%include "common.inc"
%include "longmode.inc"

COM1     equ 0x3F8
COM1_LSR equ COM1 + 5
SIEVE    equ LM_FREE                 ; 100 bytes

; ---------------------------------------------------------------- output, one routine per mode
        bits 16
; dputc16: AL to port 0xE9 and COM1. Preserves registers.
dputc16:
        push dx
        push cx
        push ax
        out DBG_PORT, al
        mov dx, COM1_LSR
        mov cx, 0xFFFF
.w:     in al, dx
        test al, 0x20
        jnz .s
        loop .w
.s:     pop ax
        mov dx, COM1
        out dx, al
        pop cx
        pop dx
        ret
; dputs16: NUL-terminated string at DS:SI.
dputs16:
        push si
        push ax
.l:     lodsb
        test al, al
        jz .d
        call dputc16
        jmp .l
.d:     pop ax
        pop si
        ret

        bits 32
dputc32:
        push edx
        push ecx
        push eax
        out DBG_PORT, al
        mov dx, COM1_LSR
        mov ecx, 0x10000
.w:     in al, dx
        test al, 0x20
        jnz .s
        loop .w
.s:     pop eax
        mov dx, COM1
        out dx, al
        pop ecx
        pop edx
        ret
dputs32:
        push esi
        push eax
.l:     lodsb
        test al, al
        jz .d
        call dputc32
        jmp .l
.d:     pop eax
        pop esi
        ret

        bits 64
dputc64:
        push rdx
        push rcx
        push rax
        out DBG_PORT, al
        mov dx, COM1_LSR
        mov ecx, 0x10000
.w:     in al, dx
        test al, 0x20
        jnz .s
        loop .w
.s:     pop rax
        mov dx, COM1
        out dx, al
        pop rcx
        pop rdx
        ret
dputs64:
        push rsi
        push rax
.l:     lodsb
        test al, al
        jz .d
        call dputc64
        jmp .l
.d:     pop rax
        pop rsi
        ret
; dputdec64: RAX as an unsigned decimal number. Preserves registers.
dputdec64:
        push rax
        push rcx
        push rdx
        push rbx
        mov rbx, 10
        xor ecx, ecx
.div:   xor edx, edx
        div rbx
        push rdx
        inc ecx
        test rax, rax
        jnz .div
.out:   pop rax
        add al, '0'
        call dputc64
        loop .out
        pop rbx
        pop rdx
        pop rcx
        pop rax
        ret

; ---------------------------------------------------------------- the tour
        bits 16
rom_start:
        INIT16
        ; COM1: 115200 8N1, FIFOs on, interrupts off
        mov dx, COM1 + 3
        mov al, 0x80                    ; DLAB
        out dx, al
        mov dx, COM1
        mov al, 1                       ; divisor 1 = 115200 baud
        out dx, al
        inc dx
        xor al, al
        out dx, al
        mov dx, COM1 + 3
        mov al, 0x03                    ; 8 data bits, no parity, 1 stop bit
        out dx, al
        mov dx, COM1 + 1
        xor al, al                      ; no UART interrupts
        out dx, al
        mov dx, COM1 + 2
        mov al, 0x07                    ; enable and clear the FIFOs
        out dx, al
        mov dx, COM1 + 4
        mov al, 0x03                    ; DTR, RTS
        out dx, al

        mov si, R(msg_real)
        call dputs16
        xor ebx, ebx
        call lm_prepare16               ; GDT (longmode.inc)
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp dword LM_SEL_KCODE32:demo_pm32

        bits 32
demo_pm32:
        mov ax, LM_SEL_KDATA
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esp, LM_STACK
        mov esi, msg_prot
        call dputs32
        call lm_build_pt32
        call lm_enable32
        jmp LM_SEL_KCODE64:demo_lm64

        bits 64
demo_lm64:
        mov ax, LM_SEL_KDATA
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov rsp, LM_STACK
        call lm_setup64
        mov rsi, msg_long
        call dputs64

        ; sieve of Eratosthenes below 100
        mov rdi, SIEVE
        mov ecx, 100
        mov al, 1
        cld
        rep stosb
        mov byte [SIEVE], 0
        mov byte [SIEVE + 1], 0
        mov ebx, 2
.outer: mov rax, rbx
        imul rax, rbx
        cmp rax, 100
        jae .sieved
        cmp byte [SIEVE + rbx], 0
        je .next
.mark:  mov byte [SIEVE + rax], 0
        add rax, rbx
        cmp rax, 100
        jb .mark
.next:  inc rbx
        jmp .outer
.sieved:
        mov rsi, msg_primes
        call dputs64
        xor ebx, ebx
        xor r8d, r8d                    ; count
.print: cmp byte [SIEVE + rbx], 0
        je .np
        mov al, ' '
        call dputc64
        mov rax, rbx
        call dputdec64
        inc r8d
.np:    inc ebx
        cmp ebx, 100
        jb .print
        mov rsi, msg_count1
        call dputs64
        mov eax, r8d
        call dputdec64
        mov rsi, msg_count2
        call dputs64

        ; Fibonacci: F(90) is the largest one shown, it needs 62 bits
        xor eax, eax                    ; F(0)
        mov edx, 1                      ; F(1)
        mov ecx, 90
.fib:   add rax, rdx
        xchg rax, rdx
        loop .fib
        mov rsi, msg_fib
        call dputs64
        call dputdec64                  ; RAX = F(90)
        mov rsi, msg_fib2
        call dputs64

        mov rsi, msg_bye
        call dputs64
        xor eax, eax
        out EXIT_PORT, eax              ; isa-debug-exit: status (0 << 1) | 1 = 1
        cli
.halt:  hlt
        jmp .halt

msg_real:   db "Ferrite demo: hello from real mode (CS=F000, reset vector at FFFFFFF0)", 10, 0
msg_prot:   db "Ferrite demo: now in 32-bit protected mode", 10, 0
msg_long:   db "Ferrite demo: now in long mode (64-bit), paging on, 4 GiB identity-mapped", 10, 0
msg_primes: db "Ferrite demo: primes below 100:", 0
msg_count1: db 10, "Ferrite demo: that is ", 0
msg_count2: db " primes", 10, 0
msg_fib:    db "Ferrite demo: Fibonacci(90) = ", 0
msg_fib2:   db " (a 64-bit number)", 10, 0
msg_bye:    db "Ferrite demo: all done, bye!", 10, 0

%include "reset.inc"
