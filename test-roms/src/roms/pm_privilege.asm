; pm_privilege: privilege levels and transitions in 32-bit protected mode.
;
; Covers ring 0 -> ring 3 by IRET and by RETF (CS/SS/ESP loaded; DS/ES/FS/GS holding DPL0 data are
; nulled), ring 3 -> ring 0 through a call gate with parameter copy (new stack from TSS SS0:ESP0 and the
; exact frame: EIP, CS, params, ESP, SS), RETF imm back to ring 3 (params popped from both stacks),
; through a DPL3 interrupt gate (frame EIP/CS/EFLAGS/ESP/SS on the TSS stack, IF cleared) and IRET
; back; #GP for privileged instructions at CPL3 (HLT, CLI/STI with IOPL<3, MOV CRn/DRn, LGDT, LIDT,
; LLDT, LTR, RDMSR, WRMSR, CLTS, INVD, WBINVD), POPF at CPL3 silently not changing IF and IOPL; CLI with
; IOPL=3 allowed; IN/OUT at CPL3 with IOPL<CPL checked against the TSS I/O permission bitmap (every byte
; of a multi-byte access, DX forms, bitmap beyond the TSS limit -> #GP(0)) and not checked with IOPL=3;
; call gate DPL < CPL #GP(gate), not-present call gate #NP(gate), JMP through a call gate to a more
; privileged segment #GP(code sel), ring-3 far CALL to conforming DPL0 code (CPL stays 3), far JMP to
; DPL0 non-conforming code #GP(sel), RETF/IRET to a more privileged level #GP(sel), loading DS/SS with
; DPL0 selectors at CPL3 #GP(sel); SYSENTER/SYSEXIT (IA32_SYSENTER_CS/ESP/EIP, CS/SS derived from
; SYSENTER_CS, flat segments, IF cleared by SYSENTER), SYSEXIT at CPL3 and SYSENTER with
; SYSENTER_CS=0 -> #GP(0).
;
; Expectations from the Intel SDM Vol. 3A 5.5-5.9 (privilege levels, call gates, stack switching,
; Figure 5-13 stack frame with parameter copy, returning from a called procedure incl. segment
; register nulling), 5.9 (privileged instructions list), 6.12.1 (stack switch on interrupt, Figure 6-4),
; 2.8 / 5.9 (privileged instructions), Vol. 1 18.5.1-18.5.2 (I/O privilege level, I/O permission bit
; map), Vol. 2 "POPF" (IF/IOPL at CPL>0), "CLI", "IN"/"OUT", "CALL", "RET", "IRET", "SYSENTER",
; "SYSEXIT" (CS = SYSENTER_CS+16 | 3, SS = SYSENTER_CS+24 | 3).
%include "common.inc"
%include "sys.inc"

CG3     equ 0x40        ; call gate DPL3 -> SEL_CODE0:cg_target, 2 params
CG0     equ 0x48        ; call gate DPL0
CONF0   equ 0x50        ; conforming code DPL0
CGNP    equ 0x58        ; call gate DPL3, not present

R3      equ 0x9000      ; ring-3 record area (dwords)
R0      equ 0x9100      ; ring-0 record area
SYSENTER_STACK equ 0x7A000

xgdt:
        GATEL SEL_CODE0, cg_target, 0xEC, 2     ; 0x40
        GATEL SEL_CODE0, cg_target, 0x8C, 2     ; 0x48
        DESC 0, 0xFFFFF, 0x9F, 0xC             ; 0x50
        GATEL SEL_CODE0, cg_target, 0x6C, 2     ; 0x58 (P=0)
xgdt_end:

rom_start:
        INIT16
        RESET_GUARD
        PM32_ENTER xgdt, xgdt_end, pm_main

        bits 32
; ring-0 targets (entered from ring 3; DS is whatever ring 3 had, so use SS: which is flat)
cg_target:
        mov [ss:R0 + 0], esp
        push eax
        mov eax, [esp + 4]
        mov [ss:R0 + 4], eax                   ; return EIP
        mov eax, [esp + 8]
        mov [ss:R0 + 8], eax                   ; return CS
        mov eax, [esp + 12]
        mov [ss:R0 + 12], eax                  ; param (last pushed)
        mov eax, [esp + 16]
        mov [ss:R0 + 16], eax                  ; param (first pushed)
        mov eax, [esp + 20]
        mov [ss:R0 + 20], eax                  ; caller ESP
        mov eax, [esp + 24]
        mov [ss:R0 + 24], eax                  ; caller SS
        mov ax, cs
        mov [ss:R0 + 28], ax
        mov ax, ss
        mov [ss:R0 + 32], ax
        pop eax
        retf 8

int80_handler:
        mov [ss:R0 + 0], esp
        push eax
        mov eax, [esp + 4]
        mov [ss:R0 + 4], eax                   ; EIP
        mov eax, [esp + 8]
        mov [ss:R0 + 8], eax                   ; CS
        mov eax, [esp + 12]
        mov [ss:R0 + 12], eax                  ; EFLAGS
        mov eax, [esp + 16]
        mov [ss:R0 + 16], eax                  ; ESP
        mov eax, [esp + 20]
        mov [ss:R0 + 20], eax                  ; SS
        pushfd
        pop eax
        mov [ss:R0 + 24], eax                  ; EFLAGS inside
        mov ax, cs
        mov [ss:R0 + 28], ax
        mov ax, ss
        mov [ss:R0 + 32], ax
        pop eax
        iretd

sysenter_target:
        mov [ss:R0 + 0], esp
        pushfd
        pop dword [ss:R0 + 4]
        mov [ss:R0 + 8], cs
        mov [ss:R0 + 12], ss
        sysexit                                ; to EDX with ESP = ECX

%macro CLRREC 0
        push edi
        push ecx
        push eax
        mov edi, R3
        mov ecx, 0x80
        mov eax, 0xDEADBEEF
        rep stosd
        pop eax
        pop ecx
        pop edi
%endmacro
; R3TEST label_prefix, eflags: TRY + IRET to ring 3 at %1; the ring-3 code ends with `int VEC_EXIT`
; or faults; either way execution continues at %1_done in ring 0.
%macro R3FAULT 4 ; {insn}, eflags, err, name: expect #GP(err) at insn in ring 3
        TRY %%r
        RING3 %%f, %2
%%f:    %1
        int VEC_EXIT
%%r:    ENDTRY
        EXPECT_EXC 13, %3, %%f, %4
%endmacro
%macro R3OK 3 ; {insn}, eflags, name: insn runs in ring 3 without exception
        TRY %%r
        RING3 %%f, %2
%%f:    %1
        int VEC_EXIT
%%r:    ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, {%3, " no fault"}
%endmacro

pm_main:
        CLRREC
; ------------------------------------------------------------ IRET to ring 3
        TRY .t1
        RING3 .t1r3, 0x2
.t1r3:  mov [ss:R3 + 0], cs
        mov [ss:R3 + 4], ss
        mov [ss:R3 + 8], ds
        mov [ss:R3 + 12], es
        mov [ss:R3 + 16], fs
        mov [ss:R3 + 20], gs
        mov [ss:R3 + 24], esp
        int VEC_EXIT
.t1:    ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, "iret to ring 3 reached ring 3"
        movzx eax, word [R3 + 0]
        CHECK32 eax, SEL_CODE3 | 3, "iret ring3 cs"
        movzx eax, word [R3 + 4]
        CHECK32 eax, SEL_DATA3 | 3, "iret ring3 ss"
        movzx eax, word [R3 + 8]
        CHECK32 eax, 0, "iret ring3 ds (dpl0) nulled"
        movzx eax, word [R3 + 12]
        CHECK32 eax, 0, "iret ring3 es nulled"
        movzx eax, word [R3 + 16]
        CHECK32 eax, 0, "iret ring3 fs nulled"
        movzx eax, word [R3 + 20]
        CHECK32 eax, 0, "iret ring3 gs nulled"
        CHECK32 [R3 + 24], RING3_STACK, "iret ring3 esp"
        CHECK32 [EXC_CS], SEL_CODE3 | 3, "exit int from ring 3: pushed cs"
        CHECK32 [EXC_SS], SEL_DATA3 | 3, "exit int from ring 3: pushed ss"

; ------------------------------------------------------------ RETF to ring 3
        mov ax, SEL_DATA3 | 3
        mov fs, ax                              ; DPL3 data: kept across the return
        TRY .t2
        push dword SEL_DATA3 | 3
        push dword RING3_STACK - 0x40
        push dword SEL_CODE3 | 3
        push dword .t2r3
        retf
.t2r3:  mov [ss:R3 + 0], cs
        mov [ss:R3 + 4], esp
        mov [ss:R3 + 8], ds
        mov [ss:R3 + 12], fs
        int VEC_EXIT
.t2:    ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, "retf to ring 3 reached ring 3"
        movzx eax, word [R3 + 0]
        CHECK32 eax, SEL_CODE3 | 3, "retf ring3 cs"
        CHECK32 [R3 + 4], RING3_STACK - 0x40, "retf ring3 esp"
        movzx eax, word [R3 + 8]
        CHECK32 eax, 0, "retf ring3 ds nulled"
        movzx eax, word [R3 + 12]
        CHECK32 eax, SEL_DATA3 | 3, "retf ring3 fs (dpl3) kept"

; ------------------------------------------------------------ call gate with parameter copy
        CLRREC
        TRY .t3
        RING3 .t3r3, 0x2
.t3r3:  mov ax, SEL_DATA3 | 3
        mov ds, ax
        push dword 0x1111
        push dword 0x2222
        call (CG3 | 3):0x12345678               ; offset ignored
.t3ret: mov [R3 + 0], esp
        mov [R3 + 4], cs
        mov [R3 + 8], ss
        mov [R3 + 12], ds
        int VEC_EXIT
.t3:    ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, "call gate round trip"
        CHECK32 [R0 + 0], RING0_STACK - 24, "call gate: ring0 esp from tss (6 dwords pushed)"
        CHECK32 [R0 + 4], .t3ret, "call gate: return eip"
        CHECK32 [R0 + 8], SEL_CODE3 | 3, "call gate: return cs"
        CHECK32 [R0 + 12], 0x2222, "call gate: param 0 copied"
        CHECK32 [R0 + 16], 0x1111, "call gate: param 1 copied"
        CHECK32 [R0 + 20], RING3_STACK - 8, "call gate: caller esp"
        CHECK32 [R0 + 24], SEL_DATA3 | 3, "call gate: caller ss"
        movzx eax, word [R0 + 28]
        CHECK32 eax, SEL_CODE0, "call gate: cs in ring 0"
        movzx eax, word [R0 + 32]
        CHECK32 eax, SEL_DATA0, "call gate: ss = tss ss0"
        CHECK32 [R3 + 0], RING3_STACK, "retf 8: ring3 params popped"
        movzx eax, word [R3 + 4]
        CHECK32 eax, SEL_CODE3 | 3, "retf 8: cs ring3"
        movzx eax, word [R3 + 8]
        CHECK32 eax, SEL_DATA3 | 3, "retf 8: ss ring3"
        movzx eax, word [R3 + 12]
        CHECK32 eax, SEL_DATA3 | 3, "retf 8: ds dpl3 kept"
        R3FAULT {call (CG0 | 3):0}, 0x2, CG0, "call gate dpl0 from ring 3"
        TRY .t3b
        RING3 .t3bf, 0x2
.t3bf:  call (CGNP | 3):0
        int VEC_EXIT
.t3b:   ENDTRY
        EXPECT_EXC 11, CGNP, .t3bf, "call gate not present"
        R3FAULT {jmp (CG3 | 3):0}, 0x2, SEL_CODE0, "jmp through call gate to ring 0"

; ------------------------------------------------------------ conforming code, far jmp/retf/iret checks
        CLRREC
        TRY .t4
        RING3 .t4r3, 0x2
.t4r3:  call (CONF0 | 3):.t4conf
        int VEC_EXIT
.t4conf:
        mov [ss:R3 + 0], cs
        mov [ss:R3 + 4], ss
        retf
.t4:    ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, "ring3 call to conforming dpl0"
        movzx eax, word [R3 + 0]
        CHECK32 eax, CONF0 | 3, "conforming: cpl stays 3 (cs rpl 3)"
        movzx eax, word [R3 + 4]
        CHECK32 eax, SEL_DATA3 | 3, "conforming: no stack switch"
        R3FAULT {jmp SEL_CODE0:0}, 0x2, SEL_CODE0, "ring3 far jmp to dpl0 code"
        TRY .t5
        RING3 .t5r3, 0x2
.t5r3:  push dword SEL_DATA0
        push esp
        push dword SEL_CODE0
        push dword .t5r3
.t5f:   retf
.t5:    ENDTRY
        EXPECT_EXC 13, SEL_CODE0, .t5f, "ring3 retf to ring 0"
        TRY .t6
        RING3 .t6r3, 0x2
.t6r3:  pushfd
        push dword SEL_CODE0
        push dword .t6r3
.t6f:   iretd
.t6:    ENDTRY
        EXPECT_EXC 13, SEL_CODE0, .t6f, "ring3 iret to ring 0"
        TRY .t7
        RING3 .t7r3, 0x2
.t7r3:  mov ax, SEL_DATA0
.t7f:   mov ds, ax
        int VEC_EXIT
.t7:    ENDTRY
        EXPECT_EXC 13, SEL_DATA0, .t7f, "ring3 mov ds,0x10"
        TRY .t8
        RING3 .t8r3, 0x2
.t8r3:  mov ax, SEL_DATA0 | 3
.t8f:   mov ss, ax
        int VEC_EXIT
.t8:    ENDTRY
        EXPECT_EXC 13, SEL_DATA0, .t8f, "ring3 mov ss,dpl0 data"

; ------------------------------------------------------------ interrupt gate DPL3 from ring 3
        SET_GATE 0x80, int80_handler, SEL_CODE0, 0xEE00
        CLRREC
        TRY .t9
        RING3 .t9r3, FL_IF | FL_CF | 2
.t9r3:  mov ax, SEL_DATA3 | 3
        mov ds, ax
        int 0x80
.t9ret: pushfd
        pop dword [R3 + 0]
        mov [R3 + 4], esp
        int VEC_EXIT
.t9:    ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, "int 0x80 round trip"
        CHECK32 [R0 + 0], RING0_STACK - 20, "int 0x80: ring0 esp = esp0-20"
        CHECK32 [R0 + 4], .t9ret, "int 0x80: pushed eip"
        CHECK32 [R0 + 8], SEL_CODE3 | 3, "int 0x80: pushed cs"
        mov eax, [R0 + 12]
        and eax, FL_IF | FL_CF | FL_IOPL3
        CHECK32 eax, FL_IF | FL_CF, "int 0x80: pushed eflags"
        CHECK32 [R0 + 16], RING3_STACK, "int 0x80: pushed esp"
        CHECK32 [R0 + 20], SEL_DATA3 | 3, "int 0x80: pushed ss"
        mov eax, [R0 + 24]
        and eax, FL_IF
        CHECK32 eax, 0, "int 0x80: IF cleared"
        movzx eax, word [R0 + 28]
        CHECK32 eax, SEL_CODE0, "int 0x80: handler cs"
        movzx eax, word [R0 + 32]
        CHECK32 eax, SEL_DATA0, "int 0x80: handler ss from tss"
        mov eax, [R3 + 0]
        and eax, FL_IF | FL_CF
        CHECK32 eax, FL_IF | FL_CF, "int 0x80: iret restores ring3 eflags"
        CHECK32 [R3 + 4], RING3_STACK, "int 0x80: iret restores ring3 esp"
        R3FAULT {int 0x81}, 0x2, 0x81 * 8 + 2, "ring3 int to dpl0 gate"

; ------------------------------------------------------------ privileged instructions at CPL3
        R3FAULT {hlt}, 0x2, 0, "ring3 hlt"
        R3FAULT {cli}, 0x2, 0, "ring3 cli iopl0"
        R3FAULT {sti}, 0x2, 0, "ring3 sti iopl0"
        R3FAULT {cli}, 0x1002, 0, "ring3 cli iopl1"
        R3OK {cli}, 0x3002, "ring3 cli iopl3"
        R3FAULT {mov eax, cr0}, 0x2, 0, "ring3 mov eax,cr0"
        R3FAULT {mov cr0, eax}, 0x2, 0, "ring3 mov cr0,eax"
        R3FAULT {mov eax, cr3}, 0x2, 0, "ring3 mov eax,cr3"
        R3FAULT {mov eax, dr7}, 0x2, 0, "ring3 mov eax,dr7"
        R3FAULT {lgdt [GDTR_RAM]}, 0x2, 0, "ring3 lgdt"
        R3FAULT {lidt [IDTR_RAM]}, 0x2, 0, "ring3 lidt"
        R3FAULT {lldt ax}, 0x2, 0, "ring3 lldt"
        R3FAULT {ltr ax}, 0x2, 0, "ring3 ltr"
        R3FAULT {rdmsr}, 0x2, 0, "ring3 rdmsr"
        R3FAULT {wrmsr}, 0x2, 0, "ring3 wrmsr"
        R3FAULT {clts}, 0x2, 0, "ring3 clts"
        R3FAULT {invd}, 0x2, 0, "ring3 invd"
        R3FAULT {wbinvd}, 0x2, 0, "ring3 wbinvd"
        R3FAULT {invlpg [0]}, 0x2, 0, "ring3 invlpg"
        R3OK {smsw eax}, 0x2, "ring3 smsw (not privileged)"
        CLRREC
        TRY .t10
        RING3 .t10r3, 0x2
.t10r3: push dword FL_IF | FL_IOPL3 | FL_CF | 2
        popfd
        pushfd
        pop dword [ss:R3 + 0]
        int VEC_EXIT
.t10:   ENDTRY
        mov eax, [R3 + 0]
        and eax, FL_IF | FL_IOPL3 | FL_CF
        CHECK32 eax, FL_CF, "ring3 popf iopl0: IF and IOPL unchanged, CF set"
        CLRREC
        TRY .t11
        RING3 .t11r3, FL_IOPL3 | 2
.t11r3: push dword FL_IF | 2
        popfd
        pushfd
        pop dword [ss:R3 + 0]
        int VEC_EXIT
.t11:   ENDTRY
        mov eax, [R3 + 0]
        and eax, FL_IF | FL_IOPL3
        CHECK32 eax, FL_IF | FL_IOPL3, "ring3 popf iopl3: IF changes, IOPL kept"

; ------------------------------------------------------------ I/O permission bitmap
        IOPERM 0x80, 1
        IOPERM 0x200, 1
        R3OK {in al, 0x80}, 0x2, "ring3 in al,0x80 allowed by bitmap"
        R3OK {out 0x80, al}, 0x2, "ring3 out 0x80,al allowed by bitmap"
        R3FAULT {in al, 0x81}, 0x2, 0, "ring3 in al,0x81 denied by bitmap"
        R3FAULT {in ax, 0x80}, 0x2, 0, "ring3 in ax,0x80 (0x81 denied)"
        R3FAULT {in al, 0x7F}, 0x2, 0, "ring3 in al,0x7f denied"
        TRY .t12
        RING3 .t12r3, 0x2
.t12r3: mov dx, 0x80
        in al, dx
        mov dx, 0x200
        in al, dx
        mov dx, 0x81
.t12f:  out dx, al
        int VEC_EXIT
.t12:   ENDTRY
        EXPECT_EXC 13, 0, .t12f, "ring3 in/out dx: 0x80,0x200 ok, 0x81 denied"
        R3OK {in al, 0x81}, 0x3002, "ring3 iopl3: bitmap not consulted"
        R3FAULT {in al, 0x81}, 0x2002, 0, "ring3 iopl2: bitmap consulted"
        ; shrink the TSS limit so that the bitmap byte for port 0x200 lies beyond it
        mov word [GDT_ADDR + SEL_TSS], TSS_IOMAP + 0x20
        mov byte [GDT_ADDR + SEL_TSS + 6], 0
        and byte [GDT_ADDR + SEL_TSS + 5], ~2   ; clear busy so that LTR can reload the limit
        mov ax, SEL_TSS
        ltr ax
        TRY .t13
        RING3 .t13r3, 0x2
.t13r3: in al, 0x80
        mov dx, 0x200
.t13f:  in al, dx
        int VEC_EXIT
.t13:   ENDTRY
        EXPECT_EXC 13, 0, .t13f, "ring3 port whose bitmap byte is beyond the tss limit"
        mov word [GDT_ADDR + SEL_TSS], TSS_LIMIT & 0xFFFF
        mov byte [GDT_ADDR + SEL_TSS + 6], TSS_LIMIT >> 16
        and byte [GDT_ADDR + SEL_TSS + 5], ~2
        mov ax, SEL_TSS
        ltr ax

; ------------------------------------------------------------ SYSENTER / SYSEXIT
        mov ecx, 0x174
        xor edx, edx
        mov eax, SEL_CODE0
        wrmsr
        mov ecx, 0x175
        mov eax, SYSENTER_STACK
        wrmsr
        mov ecx, 0x176
        mov eax, sysenter_target
        wrmsr
        CLRREC
        TRY .t14
        RING3 .t14r3, FL_IF | 2
.t14r3: mov ecx, RING3_STACK - 0x100
        mov edx, .t14back
        sysenter
.t14back:
        mov [ss:R3 + 0], cs
        mov [ss:R3 + 4], ss
        mov [ss:R3 + 8], esp
        int VEC_EXIT
.t14:   ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, "sysenter/sysexit round trip"
        CHECK32 [R0 + 0], SYSENTER_STACK, "sysenter: esp = SYSENTER_ESP"
        mov eax, [R0 + 4]
        and eax, FL_IF
        CHECK32 eax, 0, "sysenter: IF cleared"
        movzx eax, word [R0 + 8]
        CHECK32 eax, SEL_CODE0, "sysenter: cs = SYSENTER_CS"
        movzx eax, word [R0 + 12]
        CHECK32 eax, SEL_CODE0 + 8, "sysenter: ss = SYSENTER_CS+8"
        movzx eax, word [R3 + 0]
        CHECK32 eax, (SEL_CODE0 + 16) | 3, "sysexit: cs = SYSENTER_CS+16|3"
        movzx eax, word [R3 + 4]
        CHECK32 eax, (SEL_CODE0 + 24) | 3, "sysexit: ss = SYSENTER_CS+24|3"
        CHECK32 [R3 + 8], RING3_STACK - 0x100, "sysexit: esp = ecx"
        R3FAULT {sysexit}, 0x2, 0, "sysexit at cpl3"
        mov ecx, 0x174
        xor edx, edx
        xor eax, eax
        wrmsr
        R3FAULT {sysenter}, 0x2, 0, "sysenter with SYSENTER_CS=0"

        jmp finish32

%include "reset.inc"
