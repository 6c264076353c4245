; pm_shadows: the MOV SS / POP SS shadow and debug exceptions, in 32-bit protected mode.
; qemu-args: -icount shift=3,sleep=off
;
; Covers (SDM Vol. 3A 6.8.3 "Masking Exceptions and Interrupts When Switching Stacks": after MOV SS or
; POP SS, interrupts, debug exceptions and single-step traps are held until the boundary after the
; next instruction; Vol. 3B 17.3.1.4 single step, 17.3.1.2 data breakpoints, 17.2.4 general detect):
;  * single step over MOV SS and over POP SS: no #DB after the SS load, one #DB (DR6.BS) after the
;    next instruction, then one per instruction;
;  * single step over STI: the STI shadow holds interrupts only, the trap comes right after STI;
;  * ICEBP (INT1) right after MOV SS: delivered as a trap (pushed EIP after it) with no DR6 status bit;
;  * a data breakpoint hit by MOV SS's own memory read: one #DB after the next instruction, DR6.B0;
;    followed by INT n instead, the #DB comes after the INT's delivery, on the handler's first
;    instruction (Vol. 2 "MOV": a #DB held by MOV SS is delivered after the transfer to the handler of
;    a following INT n, INT3, INTO, INT1, SYSCALL or SYSENTER);
;  * DR7.GD inside the shadow: MOV from DR0 right after MOV SS still faults (#DB before the MOV,
;    DR6.BD, DR7.GD clear in the handler): the shadow holds traps, not faults;
;  * a maskable interrupt (PIT IRQ0 through the 8259 in virtual-wire mode) is never delivered between
;    MOV SS and the instruction after it: over a long loop of "mov ss / mov esp" the interrupted EIP is
;    never the MOV ESP, and interrupts do land right after it.
;
; QEMU quirks (-DQEMU_QUIRKS skips these checks): QEMU 7.2 TCG does not implement DR7.GD; it delivers a
; data breakpoint hit by MOV SS at once (before the next instruction, and before a following INT);
; it holds the single-step trap of STI until after the next instruction, as if STI were MOV SS (6.8.3
; holds debug exceptions only after MOV SS/POP SS); it raises #UD for ICEBP right after MOV SS
; (Vol. 2 "INT1": a trap-class #DB).
%include "common.inc"
%include "sys.inc"

W       equ 0x20000                     ; watched data (its own page)
LOGN    equ 0x600                       ; #DB records: count, then 5 dwords each
LOG     equ 0x610                       ; eip, eflags, dr6, dr7, cs
IRQ_N   equ 0x580                       ; timer interrupts taken
IRQ_BAD equ 0x584                       ; ... whose pushed EIP is the MOV ESP in the shadow
IRQ_AFT equ 0x588                       ; ... whose pushed EIP is right after it
INT40_N equ 0x58C

DR7_LE  equ 0x400
LAPIC   equ 0xFEE00000

%define DBREC(n, f) (LOG + (n) * 20 + (f))

%macro SETDR 2
        mov eax, %2
        mov %1, eax
%endmacro

%macro CLEAR_LOG 0
        mov dword [LOGN], 0
        xor eax, eax
        mov dr6, eax
%endmacro

%macro TF_ON 0
        pushfd
        or dword [esp], FL_TF
        popfd
%endmacro

; DR6_IS n, mask, value, "name"
%macro DR6_IS 4
        mov eax, [DBREC(%1, 8)]
        and eax, %2
        CHECK32 eax, %3, %4
%endmacro

; CHECK_RANGE32 value, min, "name": PASS if value >= min.
%macro CHECK_RANGE32 3
        mov eax, %1
        cmp eax, %2
        jae %%ok
        CHECK32 eax, %2, %3
        jmp %%done
%%ok:   CHECK32 eax, eax, %3
%%done:
%endmacro

rom_start:
        INIT16
        RESET_GUARD
        RM_IVT_INIT
        PM32_ENTER xgdt, xgdt_end, pm_main

xgdt:
xgdt_end:

        bits 32
; #DB handler: records the frame, DR6 and DR7; clears DR6; sets RF in the pushed EFLAGS unless DR6
; shows a single step only; returns.
db_handler:
        push eax
        push ebx
        mov ebx, [LOGN]
        cmp ebx, 16
        jae .full
        imul ebx, ebx, 20
        mov eax, [esp + 8]
        mov [LOG + ebx], eax
        mov eax, [esp + 16]
        mov [LOG + ebx + 4], eax
        mov eax, dr6
        mov [LOG + ebx + 8], eax
        mov eax, dr7
        mov [LOG + ebx + 12], eax
        mov eax, [esp + 12]
        mov [LOG + ebx + 16], eax
.full:  inc dword [LOGN]
        mov eax, dr6
        and eax, 0x400F
        cmp eax, 0x4000
        je .ss
        or dword [esp + 16], FL_RF
.ss:    xor eax, eax
        mov dr6, eax
        pop ebx
        pop eax
        iretd

int40_handler:
        inc dword [INT40_N]
        iretd

irq0_handler:
        push eax
        inc dword [IRQ_N]
        mov eax, [esp + 4]
        cmp eax, shadow_loop.me
        jne .n1
        inc dword [IRQ_BAD]
.n1:    cmp eax, shadow_loop.af
        jne .n2
        inc dword [IRQ_AFT]
.n2:    mov al, 0x20
        out 0x20, al
        pop eax
        iretd

pm_main:
        SET_GATE 1, db_handler, SEL_CODE0, 0x8E00
        SET_GATE 0x40, int40_handler, SEL_CODE0, 0x8E00
        SET_GATE 0x20, irq0_handler, SEL_CODE0, 0x8E00
        mov ebx, SEL_DATA0

; ------------------------------------------------------------ single step over MOV SS
        CLEAR_LOG
        TF_ON
.m1:    mov ss, bx
.m2:    nop
.m3:    pushfd
.m4:    and dword [esp], ~FL_TF
.m5:    popfd
.m6:    CHECK32 [LOGN], 4, "tf over mov ss: no trap after the SS load, then one per instruction"
        CHECK32 [DBREC(0, 0)], .m3, "tf over mov ss: first #DB after the next instruction"
        DR6_IS 0, 0x400F, 0x4000, "tf over mov ss: DR6.BS"
        CHECK32 [DBREC(1, 0)], .m4, "tf over mov ss: then after each instruction"
        CHECK32 [DBREC(3, 0)], .m6, "tf over mov ss: popf clearing TF traps last"

; ------------------------------------------------------------ single step over POP SS
        CLEAR_LOG
        push ss
        TF_ON
.p1:    pop ss
.p2:    nop
.p3:    pushfd
        and dword [esp], ~FL_TF
        popfd
        CHECK32 [LOGN], 4, "tf over pop ss: no trap after the SS load"
        CHECK32 [DBREC(0, 0)], .p3, "tf over pop ss: first #DB after the next instruction"
        DR6_IS 0, 0x400F, 0x4000, "tf over pop ss: DR6.BS"

; ------------------------------------------------------------ single step over STI
%ifndef QEMU_QUIRKS
        CLEAR_LOG
        cli
        TF_ON
.s1:    sti
.s2:    nop
.s3:    pushfd
        and dword [esp], ~(FL_TF | FL_IF)
        popfd
        CHECK32 [LOGN], 5, "tf over sti: a trap after every instruction"
        CHECK32 [DBREC(0, 0)], .s2, "tf over sti: first #DB right after STI"
        DR6_IS 0, 0x400F, 0x4000, "tf over sti: DR6.BS"
%endif

; ------------------------------------------------------------ ICEBP in the shadow
%ifndef QEMU_QUIRKS
        CLEAR_LOG
        mov ss, bx
        db 0xF1                         ; icebp
.i1:    CHECK32 [LOGN], 1, "icebp after mov ss: one #DB"
        CHECK32 [DBREC(0, 0)], .i1, "icebp after mov ss: trap, pushed EIP after it"
        DR6_IS 0, 0xE00F, 0, "icebp after mov ss: no DR6 status bit"
%endif

; ------------------------------------------------------------ data breakpoint on MOV SS's read
        mov dword [W], SEL_DATA0
        SETDR dr0, W
        SETDR dr7, DR7_LE | 1 | (3 << 16) | (1 << 18)   ; L0, R/W0 = 11, LEN0 = 2 bytes
        CLEAR_LOG
        mov ss, [W]
.d1:    nop
.d2:    SETDR dr7, DR7_LE
%ifndef QEMU_QUIRKS
        CHECK32 [LOGN], 1, "data bp on mov ss: one #DB"
        CHECK32 [DBREC(0, 0)], .d2, "data bp on mov ss: held until after the next instruction"
        DR6_IS 0, 0x400F, 1, "data bp on mov ss: DR6.B0"
%endif
        ; ... and followed by INT 0x40: delivered on the INT handler's first instruction.
        SETDR dr7, DR7_LE | 1 | (3 << 16) | (1 << 18)
        CLEAR_LOG
        mov dword [INT40_N], 0
        mov ss, [W]
        int 0x40
        SETDR dr7, DR7_LE
        CHECK32 [INT40_N], 1, "data bp on mov ss + int: the INT ran"
%ifndef QEMU_QUIRKS
        CHECK32 [LOGN], 1, "data bp on mov ss + int: one #DB"
        CHECK32 [DBREC(0, 0)], int40_handler, "data bp on mov ss + int: #DB on the handler's first instruction"
        DR6_IS 0, 0x400F, 1, "data bp on mov ss + int: DR6.B0"
%endif

; ------------------------------------------------------------ DR7.GD in the shadow
%ifndef QEMU_QUIRKS
        CLEAR_LOG
        SETDR dr7, DR7_LE | (1 << 13)
        mov ss, bx
.g1:    mov eax, dr0
        mov eax, dr7
        CHECK32 [LOGN], 1, "gd after mov ss: one #DB"
        CHECK32 [DBREC(0, 0)], .g1, "gd after mov ss: fault on the MOV DR inside the shadow"
        DR6_IS 0, 0x600F, 0x2000, "gd after mov ss: DR6.BD"
        mov eax, [DBREC(0, 12)]
        and eax, 1 << 13
        CHECK32 eax, 0, "gd after mov ss: DR7.GD clear in the handler"
%endif
        SETDR dr7, DR7_LE

; ------------------------------------------------------------ interrupts and the MOV SS shadow
        ; 8259s at 0x20/0x28, only IRQ0; the local APIC in virtual-wire mode; PIT counter 0 in mode 2
        ; with a period that is not a multiple of the loop's length.
        mov dword [LAPIC + 0xF0], 0x1FF
        mov dword [LAPIC + 0x350], 0x700
        mov al, 0x11
        out 0x20, al
        out 0xA0, al
        mov al, 0x20
        out 0x21, al
        mov al, 0x28
        out 0xA1, al
        mov al, 4
        out 0x21, al
        mov al, 2
        out 0xA1, al
        mov al, 1
        out 0x21, al
        out 0xA1, al
        mov al, 0xFE
        out 0x21, al
        mov al, 0xFF
        out 0xA1, al
        mov al, 0x34
        out 0x43, al
        mov al, 61
        out 0x40, al
        xor al, al
        out 0x40, al
        xor eax, eax
        mov [IRQ_N], eax
        mov [IRQ_BAD], eax
        mov [IRQ_AFT], eax
        call shadow_loop
        mov al, 0xFF
        out 0x21, al
        CHECK_RANGE32 [IRQ_N], 20, "interrupts taken during the loop"
        CHECK32 [IRQ_BAD], 0, "no interrupt between MOV SS and the next instruction"
        CHECK_RANGE32 [IRQ_AFT], 1, "interrupts land right after the shadowed instruction"
        jmp finish32

shadow_loop:
        mov ebp, esp
        mov ecx, 400000
        sti
.lp:    mov ss, bx
.me:    mov esp, ebp
.af:    dec ecx
        jnz .lp
        cli
        ret

%include "reset.inc"
