; debugregs: the debug registers in 32-bit protected mode (flat segments, no paging, so linear addresses
; are the offsets).
;
; Covers an instruction breakpoint (fault-class #DB before the instruction: pushed EIP = the instruction,
; pushed RF = 0, DR6.B0; IRET with RF = 1 runs the instruction once), an instruction breakpoint that is
; not enabled (L0/G0 clear) and one with only LE/GE set, data write breakpoints of each length 1/2/4/8
; (trap after the instruction, pushed EIP = the next one; the last watched byte hits, the byte past the
; end does not; a read does not hit R/W = 01; a wider write overlapping from below hits), a read/write
; breakpoint (R/W = 11) on a read, a hit in the middle of REP MOVSB (trap after that iteration: pushed
; EIP = the REP instruction, ECX = the iterations left, the copy completes after IRET), I/O breakpoints
; (R/W = 10 with CR4.DE = 1: OUT and IN to a watched port trap after the instruction), general detect
; (DR7.GD: MOV from DR0 is a fault-class #DB, DR6.BD, GD clear inside the handler, pushed RF = 1, the
; MOV runs after IRET), single step together with a data breakpoint on the same instruction (one #DB with BS and B0),
; and RF = 1 pushed by a fault-class exception (#UD).
;
; Expectations from the Intel SDM Vol. 3B 17.2 (DR0-DR3, DR6, DR7, LENn alignment 17.2.5, GD 17.2.4),
; 17.3.1 (instruction breakpoints are faults, data and I/O breakpoints and single step are traps, RF
; handling 17.3.1.1: pushed RF = 1 for fault-class exceptions other than instruction breakpoints and for
; traps between REP iterations), Vol. 3A 6.9 (priorities), Vol. 2 "MOV—Move to/from Debug Registers".
;
; QEMU TCG 7.2 differences (assembled with -DQEMU_QUIRKS, these checks are skipped): QEMU does not
; implement DR7.GD (SDM 17.2.4: MOV DR with GD set is a #DB fault with DR6.BD); QEMU pushes RF = 0 for
; fault-class exceptions and for a trap between REP iterations (SDM 17.3.1.1: RF = 1 for both); QEMU
; does not clear the low address bits of a data breakpoint to its length (SDM 17.2.5); with TF set,
; QEMU delivers a data breakpoint's #DB and then a second #DB (BS) before the handler's first
; instruction, instead of one #DB with BS and Bn for the instruction (SDM 17.3.1.2/17.3.1.4, Vol. 3A
; table 6-2: the debug traps of one instruction are reported together).
%include "common.inc"
%include "sys.inc"

W       equ 0x20000                     ; watched data (its own page)
SRC     equ 0x21000                     ; REP MOVSB source
LOGN    equ 0x600                       ; #DB records: count, then 5 dwords each
LOG     equ 0x610                       ; eip, eflags, dr6, dr7, ecx
MARK    equ 0x700                       ; scratch counter

DR7_LE  equ 0x400                       ; the always-one bit 10

; DBREC n, field: the address of field (0 eip, 4 eflags, 8 dr6, 12 dr7, 16 ecx) of record n.
%define DBREC(n, f) (LOG + (n) * 20 + (f))

; SETDR reg, value (clobbers eax)
%macro SETDR 2
        mov eax, %2
        mov %1, eax
%endmacro

; CLEAR_LOG: no records yet, DR6 clear (clobbers eax)
%macro CLEAR_LOG 0
        mov dword [LOGN], 0
        xor eax, eax
        mov dr6, eax
%endmacro

rom_start:
        INIT16
        RESET_GUARD
        RM_IVT_INIT
        PM32_ENTER xgdt, xgdt_end, pm_main

xgdt:
xgdt_end:

        bits 32
; #DB handler: records the frame, DR6, DR7 and ECX; clears DR6; sets RF in the pushed EFLAGS unless
; DR6 shows a single step only; returns.
db_handler:
        push eax
        push ebx
        mov ebx, [LOGN]
        imul ebx, ebx, 20
        mov eax, [esp + 8]
        mov [LOG + ebx], eax
        mov eax, [esp + 16]
        mov [LOG + ebx + 4], eax
        mov eax, dr6
        mov [LOG + ebx + 8], eax
        mov eax, dr7
        mov [LOG + ebx + 12], eax
        mov [LOG + ebx + 16], ecx
        inc dword [LOGN]
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

pm_main:
        SET_GATE 1, db_handler, SEL_CODE0, 0x8E00

; ------------------------------------------------------------ instruction breakpoint
        CLEAR_LOG
        mov dword [MARK], 0
        SETDR dr0, ibp1
        SETDR dr7, DR7_LE | 1                   ; L0, R/W0 = 00, LEN0 = 00
        nop
ibp1:   inc dword [MARK]
        SETDR dr7, DR7_LE
        CHECK32 [LOGN], 1, "ibp: one #DB"
        CHECK32 [DBREC(0, 0)], ibp1, "ibp: pushed eip = the instruction"
        mov eax, [DBREC(0, 4)]
        and eax, FL_RF
        CHECK32 eax, 0, "ibp: pushed RF = 0"
        mov eax, [DBREC(0, 8)]
        and eax, 0xF
        CHECK32 eax, 1, "ibp: DR6.B0"
        CHECK32 [MARK], 1, "ibp: instruction ran once after IRET with RF"

        CLEAR_LOG
        SETDR dr1, ibp2
        SETDR dr7, DR7_LE | 0x300               ; only LE/GE: not enabled
ibp2:   nop
        SETDR dr7, DR7_LE | 0x8                 ; G1
        nop
ibp2b:  SETDR dr7, DR7_LE
        CHECK32 [LOGN], 0, "ibp: LE/GE alone enable nothing; G1 elsewhere does not fire"

; ------------------------------------------------------------ data write breakpoints, each length
%macro DATA_LEN 2                               ; length, LEN field
        CLEAR_LOG
        SETDR dr2, W
        SETDR dr7, DR7_LE | 0x20 | (1 << 24) | (%2 << 26)   ; L2, R/W2 = 01, LEN2
        mov byte [W + %1], 1                    ; past the end: no hit
        mov eax, [W]                            ; a read: no hit for R/W = 01
        mov byte [W + %1 - 1], 2                ; the last watched byte
%%after:
        SETDR dr7, DR7_LE
        CHECK32 [LOGN], 1, {"data len ", %str(%1), ": one #DB"}
        CHECK32 [DBREC(0, 0)], %%after, {"data len ", %str(%1), ": trap eip after the write"}
        mov eax, [DBREC(0, 8)]
        and eax, 0xF
        CHECK32 eax, 4, {"data len ", %str(%1), ": DR6.B2"}
        movzx eax, byte [W + %1 - 1]
        CHECK32 eax, 2, {"data len ", %str(%1), ": the write happened"}
        CLEAR_LOG                               ; overlap from below
        SETDR dr7, DR7_LE | 0x20 | (1 << 24) | (%2 << 26)
        mov dword [W - 2], 0x11223344
        SETDR dr7, DR7_LE
        CHECK32 [LOGN], 1, {"data len ", %str(%1), ": write overlapping from below"}
%endmacro
        DATA_LEN 1, 0
        DATA_LEN 2, 1
        DATA_LEN 4, 3
        DATA_LEN 8, 2

%ifndef QEMU_QUIRKS
        ; DR3 = W+5 with LEN 4: the low bits are ignored, bytes W+4..W+7 are watched.
        CLEAR_LOG
        SETDR dr3, W + 5
        SETDR dr7, DR7_LE | 0x40 | (1 << 28) | (3 << 30)
        mov byte [W + 4], 3
.al:    SETDR dr7, DR7_LE
        CHECK32 [LOGN], 1, "data: address bits below the length are ignored"
        CHECK32 [DBREC(0, 0)], .al, "data: aligned hit eip"
%endif

; ------------------------------------------------------------ read/write breakpoint on a read
        CLEAR_LOG
        SETDR dr0, W + 8
        SETDR dr7, DR7_LE | 1 | (3 << 16) | (3 << 18)       ; R/W0 = 11, LEN0 = 4
        mov eax, [W + 12]                       ; outside
        mov eax, [W + 10]
.rd:    SETDR dr7, DR7_LE
        CHECK32 [LOGN], 1, "rw: a read hits R/W = 11"
        CHECK32 [DBREC(0, 0)], .rd, "rw: trap eip after the read"

; ------------------------------------------------------------ data breakpoint inside REP MOVSB
        mov edi, SRC
        mov ecx, 16
        mov al, 0xA0
.fill:  stosb
        inc al
        loop .fill
        CLEAR_LOG
        SETDR dr1, W + 0x100
        SETDR dr7, DR7_LE | 4 | (1 << 20)        ; L1, R/W1 = 01, LEN1 = 1
        cld
        mov esi, SRC
        mov edi, W + 0x100 - 5
        mov ecx, 16
.rep:   rep movsb
        SETDR dr7, DR7_LE
        CHECK32 [LOGN], 1, "rep: one #DB"
        CHECK32 [DBREC(0, 0)], .rep, "rep: pushed eip = the REP instruction"
        CHECK32 [DBREC(0, 16)], 10, "rep: ecx = iterations left after the 6th"
%ifndef QEMU_QUIRKS
        mov eax, [DBREC(0, 4)]
        and eax, FL_RF
        CHECK32 eax, FL_RF, "rep: pushed RF = 1 between iterations"
%endif
        CHECK32 ecx, 0, "rep: completed after IRET"
        CHECK32 dword [W + 0x100 + 7], 0xAFAEADAC, "rep: copied bytes"

; ------------------------------------------------------------ I/O breakpoints
        IOPERM 0x80, 1
        IOPERM 0x81, 1
        mov eax, cr4
        or eax, 8                               ; CR4.DE
        mov cr4, eax
        CLEAR_LOG
        SETDR dr0, 0x80
        SETDR dr7, DR7_LE | 1 | (2 << 16) | (1 << 18)       ; R/W0 = 10, LEN0 = 2: ports 0x80-0x81
        mov al, 0x12
        out 0x82, al                            ; outside
        out 0x80, al
.o1:    in al, 0x81
.o2:    SETDR dr7, DR7_LE
        mov eax, cr4
        and eax, ~8
        mov cr4, eax
        CHECK32 [LOGN], 2, "io: two #DB"
        CHECK32 [DBREC(0, 0)], .o1, "io: OUT trap eip"
        CHECK32 [DBREC(1, 0)], .o2, "io: IN trap eip"
        mov eax, [DBREC(1, 8)]
        and eax, 0xF
        CHECK32 eax, 1, "io: DR6.B0"

; ------------------------------------------------------------ general detect
        CLEAR_LOG
        SETDR dr0, 0x5A5A
        mov eax, DR7_LE | 0x2000                ; GD
        mov dr7, eax
.gd:    mov ebx, dr0
%ifndef QEMU_QUIRKS
        CHECK32 [LOGN], 1, "gd: one #DB"
        CHECK32 [DBREC(0, 0)], .gd, "gd: pushed eip = the MOV (fault)"
        mov eax, [DBREC(0, 8)]
        and eax, 0x2000
        CHECK32 eax, 0x2000, "gd: DR6.BD"
        mov eax, [DBREC(0, 12)]
        and eax, 0x2000
        CHECK32 eax, 0, "gd: DR7.GD clear in the handler"
        mov eax, [DBREC(0, 4)]
        and eax, FL_RF
        CHECK32 eax, FL_RF, "gd: pushed RF = 1 (fault)"
%else
        xor eax, eax                            ; QEMU leaves GD set
        mov dr7, eax
%endif
        CHECK32 ebx, 0x5A5A, "gd: the MOV ran after IRET"

; ------------------------------------------------------------ single step + data breakpoint
        CLEAR_LOG
        SETDR dr0, W + 0x200
        SETDR dr7, DR7_LE | 1 | (1 << 16)       ; L0, R/W0 = 01, LEN0 = 1
        pushfd
        or dword [esp], FL_TF
        popfd                                   ; sets TF: no trap after it
        mov byte [W + 0x200], 1
.ts1:   pushfd
.ts2:   and dword [esp], ~FL_TF
.ts3:   popfd                                   ; TF was set when it started: traps
.ts4:   SETDR dr7, DR7_LE
%ifndef QEMU_QUIRKS
        CHECK32 [LOGN], 4, "tf+data: one #DB per instruction"
        CHECK32 [DBREC(0, 0)], .ts1, "tf+data: first trap eip"
        mov eax, [DBREC(0, 8)]
        and eax, 0x400F
        CHECK32 eax, 0x4001, "tf+data: BS and B0 in one #DB"
        mov eax, [DBREC(1, 8)]
        and eax, 0x400F
        CHECK32 eax, 0x4000, "tf+data: then BS alone"
%endif
        mov ebx, [LOGN]
        dec ebx
        imul ebx, ebx, 20
        CHECK32 [LOG + ebx], .ts4, "tf+data: popf clearing TF traps (last #DB)"

; ------------------------------------------------------------ RF pushed by a fault
        TRY .ud
        ud2
.ud:    ENDTRY
        CHECK32 [EXC_VEC], 6, "#UD vector"
%ifndef QEMU_QUIRKS
        mov eax, [EXC_EFL]
        and eax, FL_RF
        CHECK32 eax, FL_RF, "#UD: pushed RF = 1"
%endif

        jmp finish32

%include "reset.inc"
