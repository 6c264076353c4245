; pm_strict: SDM requirements that QEMU TCG does not implement (32-bit protected mode): mainly segment
; limit and type checks on the memory accesses themselves, and the EXT bit of exception error codes.
;
; Assembled normally it does NOT pass under QEMU TCG, by design; with -DQEMU_QUIRKS (as the QEMU
; cross-check in test-roms/tests/qemu.rs assembles it) the checks QEMU cannot pass are skipped or
; accept QEMU's error code (macros SDM_EXC / SDM_ERR). QEMU's TCG does not check segment limits,
; segment types (read-only/execute-only) or null selectors on ordinary memory accesses and near
; branches, it reports #GP(selector) instead of #GP(0) for a far CALL beyond the target CS limit, and
; it never sets the EXT bit (bit 0) in the error code of an exception raised while delivering another,
; and its #PF error code for a reserved-bit violation has RSVD=1 but P=0.
; The SDM is authoritative; every case below is an SDM requirement and our interpreter must pass all.
;
; Covers: #GP(0) for data accesses beyond the limit (incl. an access straddling the limit), for
; writes to a read-only data segment / through a CS override / to a code segment loaded in DS, for
; reads through CS of an execute-only segment, for using a null selector in FS; #SS(0) for SS-relative
; accesses beyond the SS limit (explicit SS: and EBP-based) and for PUSH beyond the limit of a normal
; and an expand-down ring-3 stack (delivered on the ring-0 stack from the TSS); expand-down data
; segments with B=1 (valid limit+1..4G-1) and B=0 (valid limit+1..0xFFFF); a 16-bit data segment
; used with a 32-bit offset; near JMP beyond the CS limit and far CALL beyond the new CS limit (#GP(0),
; EIP of the branch); #NP raised while delivering #UD through a not-present gate has error code
; 6*8+2+EXT(1); a PAE reserved-bit page fault reports P|RSVD (9) for a read and P|W|RSVD (0xB) for a
; write.
;
; Expectations from the Intel SDM Vol. 3A 3.4.5.1 (expand-down segments: valid offsets limit+1 to
; FFFFFFFFH (B=1) or FFFFH (B=0)), 5.3 (limit checking), 5.6/5.7 (type checks: writes to code or
; read-only segments, reads of execute-only segments), 3.4.2 (null selector use -> #GP), 6.15
; "Interrupt 12—Stack Fault Exception (#SS)" and "Interrupt 13—General Protection Exception (#GP)";
; Vol. 2 "CALL" (far call: "IF tempEIP is not within code segment limit THEN #GP(0)") and "JMP";
; Vol. 3A 6.13 "Error Code" (EXT: set when the exception occurred during delivery of an event external
; to the program, such as an interrupt or an earlier exception); Vol. 3A 4.7 (RSVD: "bit 3 of the
; error code can be set only if bit 0 is also set").
%include "common.inc"
%include "sys.inc"

S_LIM    equ 0x40   ; data RW base 0x100000 limit 0xFFF
S_RO     equ 0x48   ; data read-only
S_XO     equ 0x50   ; code execute-only
S_XR     equ 0x58   ; code execute/read
S_ED     equ 0x60   ; expand-down RW, base 0x200000, limit 0xFFF, B=1
S_ED16   equ 0x68   ; expand-down RW, base 0x300000, limit 0xFFF, B=0
S_STK    equ 0x70   ; data RW base 0 limit 0x7FFFF
S_STK3   equ 0x78   ; DPL3 stack, limit 0x6FFFF
S_EDSTK3 equ 0x80   ; DPL3 expand-down stack, limit 0x6FFFF, B=1
S_CLIM   equ 0x88   ; code base 0 limit 0xFFFFF
S_CNP    equ 0x90   ; code, not present

xgdt:
        DESC 0x100000, 0xFFF, 0x93, 0x4        ; 0x40
        DESC 0, 0xFFFFF, 0x91, 0xC             ; 0x48
        DESC 0, 0xFFFFF, 0x99, 0xC             ; 0x50
        DESC 0, 0xFFFFF, 0x9B, 0xC             ; 0x58
        DESC 0x200000, 0xFFF, 0x97, 0x4        ; 0x60
        DESC 0x300000, 0xFFF, 0x97, 0x0        ; 0x68
        DESC 0, 0x7FFFF, 0x93, 0x4             ; 0x70
        DESC 0, 0x6FFFF, 0xF3, 0x4             ; 0x78
        DESC 0, 0x6FFFF, 0xF7, 0x4             ; 0x80
        DESC 0, 0xFFFFF, 0x9B, 0x4             ; 0x88
        DESC 0, 0xFFFFF, 0x1B, 0xC             ; 0x90 (P=0)
xgdt_end:

rom_start:
        INIT16
        RESET_GUARD
        PM32_ENTER xgdt, xgdt_end, pm_main

        bits 32
; SDM_EXC vec, err, eip, name: an exception QEMU TCG does not raise at all. With -DQEMU_QUIRKS the
; case is not checked (the instruction still runs; nothing it does can hang or corrupt the ROM).
; SDM_ERR vec, err, qemu_err, eip, name: QEMU raises it with another error code; -DQEMU_QUIRKS
; accepts QEMU's value instead.
%ifdef QEMU_QUIRKS
 %macro SDM_EXC 4
 %endmacro
 %macro SDM_ERR 5
        EXPECT_EXC %1, %3, %4, {%5, " (QEMU_QUIRKS error code)"}
 %endmacro
%else
 %macro SDM_EXC 4
        EXPECT_EXC %1, %2, %3, %4
 %endmacro
 %macro SDM_ERR 5
        EXPECT_EXC %1, %2, %4, %5
 %endmacro
%endif
%macro FAULT 4
        TRY %%r
%%f:    %1
%%r:    ENDTRY
        SDM_EXC %2, %3, %%f, %4
%endmacro
%macro NOFAULT 2
        TRY %%r
        %1
%%r:    ENDTRY
        EXPECT_NOEXC %2
%endmacro

pm_main:
        mov dword [0x101000], 0                 ; just past S_LIM
        mov dword [0x100FFC], 0x11111111
        mov dword [0x201000], 0x22222222        ; S_ED offset 0x1000
        mov dword [0x30FFFC], 0x33333333        ; S_ED16 offset 0xFFFC
        mov dword [0x100000], 0x0B0F0B0F        ; ud2 (in case a near jmp beyond the limit is not caught)

; ------------------------------------------------------------ data segment limit
        mov ax, S_LIM
        mov ds, ax
        mov eax, [0xFFC]
        mov bx, SEL_DATA0
        mov ds, bx
        CHECK32 eax, 0x11111111, "read at limit-3 ok"
        mov ax, S_LIM
        TRY .l1
        mov ds, ax
.l1f:   mov eax, [0xFFD]
.l1:    ENDTRY
        SDM_EXC 13, 0, .l1f, "dword read straddling limit"
        mov ax, S_LIM
        TRY .l2
        mov es, ax
.l2f:   mov byte [es:0x1000], 1
.l2:    ENDTRY
        SDM_EXC 13, 0, .l2f, "byte write at limit+1"
        mov ax, SEL_DATA16
        TRY .l3
        mov fs, ax
.l3f:   mov eax, [fs:0x10000]
.l3:    ENDTRY
        mov ax, SEL_DATA0
        mov fs, ax
        SDM_EXC 13, 0, .l3f, "16-bit data segment, offset 0x10000"

; ------------------------------------------------------------ type checks on access
        mov ax, S_RO
        TRY .t1
        mov ds, ax
.t1f:   mov dword [0x9000], 1
.t1:    ENDTRY
        SDM_EXC 13, 0, .t1f, "write to read-only data"
        TRY .t2
.t2f:   mov dword [cs:0x9000], 1
.t2:    ENDTRY
        SDM_EXC 13, 0, .t2f, "write through cs override"
        mov ax, S_XR
        TRY .t3
        mov ds, ax
.t3f:   mov dword [0x9000], 1
.t3:    ENDTRY
        SDM_EXC 13, 0, .t3f, "write to code segment in ds"
        TRY .t4
        jmp S_XO:.xo
.xo:
.t4f:   mov eax, [cs:0x9000]
        jmp SEL_CODE0:.t4
.t4:    ENDTRY
        SDM_EXC 13, 0, .t4f, "read execute-only through cs"
        xor eax, eax
        TRY .t5
        mov fs, ax
.t5f:   mov eax, [fs:0x9000]
.t5:    ENDTRY
        mov ax, SEL_DATA0
        mov fs, ax
        SDM_EXC 13, 0, .t5f, "null fs use"

; ------------------------------------------------------------ expand-down data
        mov ax, S_ED
        mov ds, ax
        mov eax, [0x1000]
        mov bx, SEL_DATA0
        mov ds, bx
        CHECK32 eax, 0x22222222, "expand-down b=1 read at limit+1"
        mov ax, S_ED
        TRY .e1
        mov ds, ax
.e1f:   mov al, [0xFFF]
.e1:    ENDTRY
        SDM_EXC 13, 0, .e1f, "expand-down b=1 read at limit"
        mov ax, S_ED
        TRY .e2
        mov ds, ax
.e2f:   mov eax, [0xFFE]
.e2:    ENDTRY
        SDM_EXC 13, 0, .e2f, "expand-down b=1 dword straddling limit+1"
        mov ax, S_ED
        TRY .e3
        mov ds, ax
        mov eax, [0xFFFFFFFC]
.e3:    ENDTRY
        EXPECT_NOEXC "expand-down b=1 read at 4G-4"
        mov ax, S_ED16
        mov ds, ax
        mov eax, [0xFFFC]
        mov bx, SEL_DATA0
        mov ds, bx
        CHECK32 eax, 0x33333333, "expand-down b=0 read at 0xfffc"
        mov ax, S_ED16
        TRY .e4
        mov ds, ax
.e4f:   mov ax, [0xFFFF]
.e4:    ENDTRY
        SDM_EXC 13, 0, .e4f, "expand-down b=0 word straddling 0xffff"
        mov ax, S_ED16
        TRY .e5
        mov ds, ax
.e5f:   mov al, [0x10000]
.e5:    ENDTRY
        SDM_EXC 13, 0, .e5f, "expand-down b=0 offset 0x10000"
        mov ax, S_ED16
        TRY .e6
        mov ds, ax
.e6f:   mov al, [0x800]
.e6:    ENDTRY
        SDM_EXC 13, 0, .e6f, "expand-down b=0 offset below limit"

; ------------------------------------------------------------ stack limit: #SS(0)
        mov ax, S_STK
        TRY .s1
        mov ss, ax
.s1f:   mov eax, [ss:0x80000]
.s1:    ENDTRY
        SDM_EXC 12, 0, .s1f, "ss: read beyond limit"
        mov ax, S_STK
        mov ebp, 0x7FFFE
        TRY .s2
        mov ss, ax
.s2f:   mov eax, [ebp]
.s2:    ENDTRY
        SDM_EXC 12, 0, .s2f, "[ebp] dword straddling ss limit"
        mov ax, S_STK
        mov ebp, 0x7FFFE
        TRY .s3
        mov ss, ax
.s3f:   mov eax, [ds:ebp]
.s3:    ENDTRY
        mov ax, SEL_DATA0
        mov ss, ax
        EXPECT_NOEXC "ds:[ebp] uses ds limit"
        TRY .s4
        push dword S_STK3 | 3
        push dword 0x70004
        push dword 0x2
        push dword SEL_CODE3 | 3
        push dword .r3push
        iretd
.r3push:
.s4f:   push eax
        int VEC_EXIT
.s4:    ENDTRY
        SDM_EXC 12, 0, .s4f, "ring3 push beyond ss limit"
        TRY .s5
        push dword S_EDSTK3 | 3
        push dword 0x70004
        push dword 0x2
        push dword SEL_CODE3 | 3
        push dword .r3edpush
        iretd
.r3edpush:
        push eax                                ; 0x70000: above the limit, valid
.s5f:   push eax                                ; 0x6FFFC: at/below the limit
        int VEC_EXIT
.s5:    ENDTRY
        SDM_EXC 12, 0, .s5f, "ring3 expand-down stack push below limit"

; ------------------------------------------------------------ code limit
        TRY .c1
        jmp S_CLIM:.inlim
.inlim:
.c1f:   jmp 0x100000
.c1:    ENDTRY
        SDM_EXC 13, 0, .c1f, "near jmp beyond cs limit"
        TRY .cf
.cff:   call S_CLIM:0x100000
.cf:    ENDTRY
        SDM_ERR 13, 0, S_CLIM, .cff, "call far beyond cs limit"

; ------------------------------------------------------------ EXT bit in error codes
        and byte [IDT_ADDR + 6 * 8 + 5], 0x7F   ; #UD gate not present
        TRY .x1
.x1f:   ud2
.x1:    ENDTRY
        RESTORE_GATE 6
        SDM_ERR 11, 6 * 8 + 2 + 1, 6 * 8 + 2, .x1f, "#UD with not-present gate -> #NP(EXT)"
        SET_GATE 0x45, pm_stubs, S_CNP, 0x8E00
        SET_GATE 6, pm_stubs, S_CNP, 0x8E00     ; #UD gate -> not-present code segment
        TRY .x2
.x2f:   ud2
.x2:    ENDTRY
        RESTORE_GATE 6
        SDM_ERR 11, S_CNP + 1, S_CNP, .x2f, "#UD via gate to not-present cs -> #NP(sel+EXT)"
        TRY .x3
.x3f:   int 0x45
.x3:    ENDTRY
        EXPECT_EXC 11, S_CNP, .x3f, "int n via gate to not-present cs -> #NP(sel), EXT=0"
        RESTORE_GATE 0x45

; ------------------------------------------------------------ #PF error code with RSVD has P=1
        mov edi, 0x108000
        mov ecx, 0x2000 / 4
        xor eax, eax
        rep stosd
        mov dword [0x108000], 0x109000 | 1              ; PDPTE 0 -> PD
        mov dword [0x109000 + 0 * 8], 0x000000 | 0x87   ; 2 MiB identity
        mov dword [0x109000 + 1 * 8], 0x200000 | 0x87   ; 2 MiB, bit 45 set (above MAXPHYADDR 40)
        mov dword [0x109000 + 1 * 8 + 4], 0x2000
        mov eax, cr4
        or eax, 0x20
        mov cr4, eax
        mov eax, 0x108000
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        TRY .p1
.p1f:   mov eax, [0x200010]
.p1:    ENDTRY
        SDM_ERR 14, 9, 8, .p1f, "#PF rsvd read: error code P|RSVD"
        TRY .p2
.p2f:   mov dword [0x200010], 0
.p2:    ENDTRY
        SDM_ERR 14, 0xB, 0xA, .p2f, "#PF rsvd write: error code P|W|RSVD"
        mov eax, cr0
        and eax, ~0x80000000
        mov cr0, eax

        jmp finish32

%include "reset.inc"
