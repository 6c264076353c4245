; real_string: real-mode string instructions.
;
; Covers MOVS/STOS/LODS/CMPS/SCAS in byte/word/dword forms, REP/REPE/REPNE with CX counts incl. 0
; (no iteration, no flag change), DF=1 (backwards, SI/DI decrement by the element size), segment
; override on the source (DS:SI overridable) while ES:DI stays fixed (STOS/SCAS/the MOVS and CMPS
; destination ignore overrides), termination and flags of REPE/REPNE CMPS/SCAS, 16-bit address size
; (only CX/SI/DI used and updated, upper halves kept, DI wraps at 64 KiB), 32-bit address size (67)
; using ECX/EDI, and element-by-element semantics of an overlapping REP MOVSB.
;
; Expectations from the Intel SDM Vol. 2B "MOVS/MOVSB/MOVSW/MOVSD", "STOS", "LODS", "CMPS", "SCAS",
; "REP/REPE/REPZ/REPNE/REPNZ" (Operation: CountReg = 0 -> no iteration; termination conditions
; table), Vol. 1 7.3.9 (string operations, DF), Vol. 1 3.7.5 / 3.3.7 (segment defaults, ES:DI
; cannot be overridden), Vol. 3A 20.1.1 (real-mode addressing).
%include "common.inc"
%include "sys.inc"

SRC     equ 0x1000
DST     equ 0x2000
TFLAGS  equ 0x600

%macro FLAGSCHK 3 ; expected, mask, "name"
        pushf
        pop word [ss:TFLAGS]
        and word [ss:TFLAGS], %2
        CHECK16 dword [ss:TFLAGS], %1, {%3, " flags"}
%endmacro
%macro SETF 1
        push word (%1) | 2
        popf
%endmacro
; FILL addr, count, byte: plain loop (not a string instruction) with DS=0.
%macro FILL 3
        push bx
        push cx
        mov bx, %1
        mov cx, %2
%%l:    mov byte [bx], %3
        inc bx
        loop %%l
        pop cx
        pop bx
%endmacro

str1:   db "HELLO, WORLD!!!!"
str_a:  db "ABCDE"
str_b:  db "ABCXE"
str_c:  db "XYCZZ"
str_sp: db "   X"

rom_start:
        INIT16
        RESET_GUARD
        RM_IVT_INIT
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov dword [TFLAGS], 0
        xor ecx, ecx
        xor esi, esi
        xor edi, edi
        cld

; ------------------------------------------------------------ MOVS
        FILL SRC, 0x40, 0xEE
        FILL DST, 0x40, 0xEE
        mov si, R(str1)
        mov di, SRC
        mov cx, 16
        rep cs movsb
        CHECK16 dword [SRC], "HELL", "rep cs movsb data 0"
        CHECK16 dword [SRC + 12], "!!!!", "rep cs movsb data 12"
        CHECK16 dword [SRC + 16], 0xEEEEEEEE, "rep cs movsb stops"
        CHECK16 esi, R(str1) + 16, "rep movsb si"
        CHECK16 edi, SRC + 16, "rep movsb di"
        CHECK16 ecx, 0, "rep movsb cx"
        mov si, SRC
        mov di, DST
        mov cx, 3
        rep movsw
        CHECK16 dword [DST], "HELL", "rep movsw data"
        CHECK16 dword [DST + 4], 0xEEEE2C4F, "rep movsw 3 words only"
        CHECK16 esi, SRC + 6, "rep movsw si"
        CHECK16 edi, DST + 6, "rep movsw di"
        mov si, SRC + 8
        mov di, DST + 8
        mov cx, 2
        rep movsd
        CHECK16 dword [DST + 8], "ORLD", "rep movsd data 0"
        CHECK16 dword [DST + 12], "!!!!", "rep movsd data 1"
        CHECK16 dword [DST + 16], 0xEEEEEEEE, "rep movsd 2 dwords only"
        CHECK16 esi, SRC + 16, "rep movsd si"
        CHECK16 edi, DST + 16, "rep movsd di"
        mov si, SRC
        mov di, DST + 0x20
        xor cx, cx
        SETF FL_ZF|FL_CF
        rep movsb
        FLAGSCHK FL_ZF|FL_CF, FL_ARITH, "rep movsb cx=0"
        CHECK16 dword [DST + 0x20], 0xEEEEEEEE, "rep movsb cx=0 no write"
        CHECK16 esi, SRC, "rep movsb cx=0 si"
        CHECK16 edi, DST + 0x20, "rep movsb cx=0 di"
        mov si, SRC
        mov di, DST + 0x20
        movsb                                   ; no rep: exactly one element
        CHECK16 dword [DST + 0x20], 0xEEEEEE48, "movsb single"
        CHECK16 edi, DST + 0x21, "movsb single di"

        ; DF = 1
        FILL DST + 0x20, 0x20, 0
        std
        mov si, SRC + 15
        mov di, DST + 0x2F
        mov cx, 16
        rep movsb
        cld
        CHECK16 dword [DST + 0x20], "HELL", "std rep movsb data 0"
        CHECK16 dword [DST + 0x2C], "!!!!", "std rep movsb data 12"
        CHECK16 dword [DST + 0x1C], 0xEEEEEEEE, "std rep movsb stops"
        CHECK16 esi, SRC - 1, "std rep movsb si"
        CHECK16 edi, DST + 0x1F, "std rep movsb di"
        std
        mov si, SRC + 2
        mov di, DST + 0x32
        mov cx, 2
        rep movsw
        cld                                     ; (the report helpers need DF=0)
        CHECK16 esi, SRC - 2, "std rep movsw si"
        CHECK16 edi, DST + 0x2E, "std rep movsw di"
        std
        mov si, SRC + 4
        mov di, DST + 0x34
        movsd
        cld
        CHECK16 esi, SRC, "std movsd si"
        CHECK16 edi, DST + 0x30, "std movsd di"
        CHECK16 dword [DST + 0x30], "HELL", "std movsw/movsd data"
        CHECK16 dword [DST + 0x34], "O, W", "std movsd data"

        ; overlapping forward copy propagates element by element
        mov dword [DST + 0x40], 0x44434241
        mov dword [DST + 0x44], 0x48474645
        mov si, DST + 0x40
        mov di, DST + 0x41
        mov cx, 7
        rep movsb
        CHECK16 dword [DST + 0x40], 0x41414141, "rep movsb overlap 0"
        CHECK16 dword [DST + 0x44], 0x41414141, "rep movsb overlap 4"

; ------------------------------------------------------------ STOS / LODS
        mov di, DST
        mov cx, 4
        mov eax, 0x1234ABCD
        rep stosw
        CHECK16 dword [DST], 0xABCDABCD, "rep stosw 0"
        CHECK16 dword [DST + 4], 0xABCDABCD, "rep stosw 4"
        CHECK16 dword [DST + 8], "ORLD", "rep stosw stops"
        CHECK16 edi, DST + 8, "rep stosw di"
        mov di, DST + 8
        mov al, 0x5A
        stosb
        CHECK16 dword [DST + 8], 0x444C525A, "stosb"
        mov di, DST + 12
        mov cx, 2
        std
        rep stosd
        cld
        CHECK16 edi, DST + 4, "std rep stosd di"
        CHECK16 dword [DST + 8], 0x1234AB5A, "std rep stosd second"
        CHECK16 dword [DST + 12], 0x1234AB5A, "std rep stosd first"
        mov di, DST
        xor cx, cx
        rep stosd
        CHECK16 dword [DST], 0xABCDABCD, "rep stosd cx=0 no write"
        mov si, SRC
        mov eax, 0xFFFFFFFF
        lodsb
        CHECK16 eax, 0xFFFFFF48, "lodsb"
        lodsw
        CHECK16 eax, 0xFFFF4C45, "lodsw"
        CHECK16 esi, SRC + 3, "lodsw si"
        lodsd
        CHECK16 eax, 0x202C4F4C, "lodsd"
        CHECK16 esi, SRC + 7, "lodsd si"
        std
        lodsw
        cld
        CHECK16 eax, 0x202C4F57, "std lodsw"
        CHECK16 esi, SRC + 5, "std lodsw si"
        mov si, R(str1) + 8
        cs lodsb
        CHECK16 eax, 0x202C4F4F, "cs lodsb"

; ------------------------------------------------------------ CMPS
        mov si, R(str_a)
        mov di, SRC
        mov cx, 5
        rep cs movsb                            ; SRC = "ABCDE"
        mov si, R(str_b)
        mov di, DST
        mov cx, 5
        rep cs movsb                            ; DST = "ABCXE"
        mov si, SRC
        mov di, DST
        cmpsb
        FLAGSCHK FL_ZF|FL_PF, FL_ARITH, "cmpsb equal"
        mov si, SRC
        mov di, DST
        mov cx, 5
        repe cmpsb                              ; stops after 'D' vs 'X'
        FLAGSCHK FL_CF|FL_AF|FL_SF, FL_ARITH, "repe cmpsb mismatch"
        CHECK16 ecx, 1, "repe cmpsb mismatch cx"
        CHECK16 esi, SRC + 4, "repe cmpsb mismatch si"
        CHECK16 edi, DST + 4, "repe cmpsb mismatch di"
        mov si, SRC
        mov di, DST
        mov cx, 3
        repe cmpsb                              ; "ABC" = "ABC": runs out
        FLAGSCHK FL_ZF|FL_PF, FL_ARITH, "repe cmpsb exhausted"
        CHECK16 ecx, 0, "repe cmpsb exhausted cx"
        CHECK16 esi, SRC + 3, "repe cmpsb exhausted si"
        mov si, R(str_c)
        mov di, DST
        mov cx, 5
        repne cs cmpsb                          ; "XYCZZ" vs "ABCXE": equal at index 2
        FLAGSCHK FL_ZF|FL_PF, FL_ARITH, "repne cmpsb match"
        CHECK16 ecx, 2, "repne cmpsb match cx"
        CHECK16 edi, DST + 3, "repne cmpsb match di"
        mov si, SRC
        mov di, DST
        mov cx, 2
        repe cmpsw                              ; "AB"="AB", "CD" vs "CX"
        FLAGSCHK FL_CF|FL_SF|FL_PF, FL_ARITH, "repe cmpsw"
        CHECK16 ecx, 0, "repe cmpsw cx"
        CHECK16 esi, SRC + 4, "repe cmpsw si"
        mov si, SRC
        mov di, DST
        cmpsd                                   ; "ABCD" - "ABCX": dword 0x44434241 - 0x58434241
        FLAGSCHK FL_CF|FL_SF|FL_PF, FL_ARITH, "cmpsd"
        mov si, SRC
        mov di, DST
        xor cx, cx
        SETF FL_OF|FL_PF
        repe cmpsb
        FLAGSCHK FL_OF|FL_PF, FL_ARITH, "repe cmpsb cx=0 keeps flags"
        CHECK16 esi, SRC, "repe cmpsb cx=0 si"
        std
        mov si, SRC + 4
        mov di, DST + 4
        mov cx, 5
        repe cmpsb                              ; backwards: 'E'='E', 'D' vs 'X'
        cld
        CHECK16 ecx, 3, "std repe cmpsb cx"
        CHECK16 esi, SRC + 2, "std repe cmpsb si"

; ------------------------------------------------------------ SCAS
        mov di, SRC
        mov cx, 5
        mov al, 'C'
        repne scasb
        FLAGSCHK FL_ZF|FL_PF, FL_ARITH, "repne scasb found"
        CHECK16 ecx, 2, "repne scasb found cx"
        CHECK16 edi, SRC + 3, "repne scasb found di"
        mov di, SRC
        mov cx, 5
        mov al, 'Z'
        repne scasb
        FLAGSCHK 0, FL_ZF, "repne scasb not found"
        CHECK16 ecx, 0, "repne scasb not found cx"
        CHECK16 edi, SRC + 5, "repne scasb not found di"
        mov si, R(str_sp)
        mov di, DST + 0x10
        mov cx, 4
        rep cs movsb
        mov di, DST + 0x10
        mov cx, 4
        mov al, ' '
        repe scasb                              ; 3 spaces then 'X' in the 4th (last) element
        FLAGSCHK 0, FL_ZF, "repe scasb skip blanks"
        CHECK16 ecx, 0, "repe scasb cx"
        CHECK16 edi, DST + 0x14, "repe scasb di"
        mov di, SRC
        mov cx, 3
        mov ax, 'CD'                            ; 0x4443: bytes "CD"
        repne scasw
        FLAGSCHK FL_ZF, FL_ZF, "repne scasw found"
        CHECK16 ecx, 1, "repne scasw cx"
        CHECK16 edi, SRC + 4, "repne scasw di"
        mov di, SRC
        mov eax, 'ABCD'
        scasd
        FLAGSCHK FL_ZF, FL_ZF, "scasd"
        mov di, SRC
        xor cx, cx
        SETF FL_CF
        repne scasb
        FLAGSCHK FL_CF, FL_ARITH, "repne scasb cx=0"
        CHECK16 edi, SRC, "repne scasb cx=0 di"

; ------------------------------------------------------------ segment overrides; ES:DI fixed
        mov dword [0x3100], 0
        mov dword [0x2100], 0
        mov ax, 0x100                           ; DS base 0x1000
        mov ds, ax
        mov di, 0x2100
        mov al, 0x77
        ds stosb                                ; override ignored: ES:DI = 0:2100
        xor ax, ax
        mov ds, ax
        CHECK16 dword [0x2100], 0x77, "ds stosb writes es:di"
        CHECK16 dword [0x3100], 0, "ds stosb not ds:di"
        mov dword [0x2200], 0x11223344          ; 0:2200
        mov dword [0x3200], 0x55667788          ; 0x100:2200
        mov ax, 0x100
        mov fs, ax
        mov si, 0x2200
        mov di, 0x2300
        mov cx, 4
        rep fs movsb                            ; source FS:SI, destination ES:DI
        CHECK16 dword [0x2300], 0x55667788, "rep fs movsb source fs:si"
        mov ax, 0x2345                          ; DS = junk
        mov ds, ax
        mov si, 0x2200
        mov di, 0x2400
        es movsw                                ; source ES:SI
        ss movsw                                ; source SS:SI
        xor ax, ax
        mov ds, ax
        CHECK16 dword [0x2400], 0x11223344, "es/ss movsw source override"
        mov si, 0x2200
        mov di, 0x2300
        fs cmpsd                                ; FS:SI (55667788) vs ES:DI (55667788)
        FLAGSCHK FL_ZF|FL_PF, FL_ARITH, "fs cmpsd"
        mov di, 0x2200
        mov eax, 0x11223344
        fs scasd                                ; override ignored: compares ES:DI
        FLAGSCHK FL_ZF, FL_ZF, "fs scasd uses es:di"
        mov si, 0x2200
        fs lodsd
        CHECK16 eax, 0x55667788, "fs lodsd"

; ------------------------------------------------------------ address size
        mov ax, 0x1000
        mov es, ax
        mov byte [es:0], 0
        mov byte [es:0xFFFF], 0
        mov di, 0xFFFF
        mov cx, 2
        mov al, 0xA5
        rep stosb                               ; ES:FFFF then ES:0000 (DI wraps)
        CHECK16 edi, 1, "a16 stosb di wraps"
        mov eax, [es:0]
        and eax, 0xFF
        CHECK16 eax, 0xA5, "a16 stosb wrapped write at es:0"
        mov al, [es:0xFFFF]
        movzx eax, al
        CHECK16 eax, 0xA5, "a16 stosb write at es:ffff"
        xor ax, ax
        mov es, ax
        mov ecx, 0xFFFF0002
        mov edi, 0xABCD2500
        mov dword [0x2500], 0
        mov al, 0x3C
        rep stosb                               ; only CX/DI count and advance
        CHECK16 ecx, 0xFFFF0000, "a16 rep: ecx upper kept"
        CHECK16 edi, 0xABCD2502, "a16 rep: edi upper kept"
        CHECK16 dword [0x2500], 0x3C3C, "a16 rep stosb data"
        mov ecx, 3
        mov edi, 0x2600
        mov dword [0x2600], 0
        a32 rep stosb                           ; 67: ECX/EDI
        CHECK16 ecx, 0, "a32 rep stosb ecx"
        CHECK16 edi, 0x2603, "a32 rep stosb edi"
        CHECK16 dword [0x2600], 0x3C3C3C, "a32 rep stosb data"
        mov esi, 0x2600
        mov edi, 0x2700
        mov ecx, 1
        a32 rep movsd
        CHECK16 dword [0x2700], 0x3C3C3C, "a32 rep movsd"
        CHECK16 esi, 0x2604, "a32 movsd esi"

        jmp finish16

%include "reset.inc"
