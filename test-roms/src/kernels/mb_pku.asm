; mb_pku: protection keys (PKU) in a multiboot (v1) kernel: CR4.PKE, RDPKRU/WRPKRU and the keys of
; user pages in the IA-32e page walk (Intel SDM vol. 3 4.6.2 "Protection Keys", 4.7 the PK bit of the
; #PF error code; vol. 2 RDPKRU/WRPKRU). Needs a CPU with PKU: the harness boots it with `--cpu max`
; (QEMU: `-cpu max`).
;
;   qemu-system-x86_64 -cpu max -kernel mb_pku.bin -m 128 \
;     -device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon stdio -display none
;
; The kernel enters long mode with the first 2 MiB identity-mapped as user pages (key 0) so that ring 3
; may run its code, and linear 0x400000 + k * 4 KiB (k = 0..3) mapped to user pages with protection key
; k (the page of key 3 read-only). #UD, #GP and #PF handlers record the vector, error code and CR2 and
; resume at the address the test left in `resume`, so each case is one instruction.
;
; Covers: CPUID.7.ECX PKU, and OSPKE following CR4.PKE; RDPKRU/WRPKRU #UD without CR4.PKE, #GP(0)
; with ECX (or EDX) not 0, and the value round trip; supervisor accesses: AD refuses reads (error code
; P|PK), WD refuses writes with CR0.WP = 1 (P|W|PK) and not with WP = 0; user accesses (CPL 3): AD
; refuses reads (P|U|PK), WD writes (P|W|U|PK), a write to the read-only page of a key without WD is
; P|W|U without PK; instruction fetches ignore keys; a WRPKRU at CPL 3 applies to a page the TLB already
; holds; CR4.PKE = 0 disables the checks.

        bits 32
        org 0x100000

MB_MAGIC    equ 0x1BADB002
MB_FLAGS    equ 0x00010003
DBG_PORT    equ 0xE9
EXIT_PORT   equ 0xF4
USER        equ 0x400000            ; the keyed pages
UPHYS       equ 0x300000            ; their physical frames

; TRY insn: clears the exception record, sets the resume address to after the instruction, runs it.
%macro TRY 1-2
        mov qword [exc_vec], -1
        mov qword [exc_err], -1
        push rax
        mov rax, %%after
        mov [resume], rax
        pop rax
%if %0 == 2
        %1, %2
%else
        %1
%endif
%%after:
        mov qword [resume], 0
%endmacro

; EXPECT cc, "name" (ring 0 only: it prints).
%macro EXPECT 2
        push rsi
        j%1 %%ok
        mov rsi, %%fail_msg
        inc qword [failures]
        call puts
        jmp %%done
%%fail_msg: db "FAIL: ", %2, 10, 0
%%ok:
        mov rsi, %%pass_msg
        call puts
        jmp %%done
%%pass_msg: db "PASS: ", %2, 10, 0
%%done:
        pop rsi
%endmacro

; PF err, address, "name": the last TRY raised #PF with that error code and CR2.
%macro PF 3
        cmp qword [exc_vec], 14
        jne %%bad
        cmp qword [exc_err], %1
        jne %%bad
        mov rax, %2
        cmp [exc_cr2], rax
%%bad:
        EXPECT e, %3
%endmacro

; NOFAULT "name": the last TRY raised nothing.
%macro NOFAULT 1
        cmp qword [exc_vec], -1
        EXPECT e, %1
%endmacro

mb_header:
        dd MB_MAGIC
        dd MB_FLAGS
        dd -(MB_MAGIC + MB_FLAGS)
        dd mb_header
        dd mb_header
        dd load_end
        dd bss_end
        dd start

start:
        cli
        mov esp, stack_top
        ; Page tables (in bss, zeroed by the loader): PML4 -> PDPT -> PD; PD[0] a 2 MiB user page,
        ; PD[2] -> PT with the keyed pages.
        mov dword [pml4], pdpt + 7
        mov dword [pdpt], pd + 7
        mov dword [pd], 0x87
        mov dword [pd + 16], pt + 7
        xor ecx, ecx
.pt:    mov eax, ecx
        shl eax, 12
        add eax, UPHYS + 7
        cmp ecx, 3
        jne .rw
        and eax, ~2                 ; key 3's page is read-only
.rw:    mov [pt + ecx * 8], eax
        mov eax, ecx
        shl eax, 27                 ; key in bits 62:59 = bits 30:27 of the high dword
        mov [pt + ecx * 8 + 4], eax
        inc ecx
        cmp ecx, 4
        jb .pt
        mov eax, cr4
        or eax, 1 << 5              ; PAE
        mov cr4, eax
        mov eax, pml4
        mov cr3, eax
        mov ecx, 0xC0000080
        rdmsr
        or eax, 1 << 8              ; LME
        wrmsr
        mov eax, cr0
        or eax, (1 << 31) | (1 << 16) ; PG, WP
        mov cr0, eax
        lgdt [gdt_ptr]
        jmp 0x08:long_entry

        bits 64
long_entry:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov rsp, stack_top
        ; TSS descriptor (RSP0 for exceptions taken in ring 3) and the IDT.
        mov rax, tss
        mov rdx, rax
        shl rdx, 16
        mov rcx, 0xFFFFFF0000
        and rdx, rcx
        or rdx, 0x67
        mov rcx, rax
        shr rcx, 24
        shl rcx, 56
        or rdx, rcx
        mov rcx, 0x89
        shl rcx, 40
        or rdx, rcx
        mov [gdt + 0x28], rdx
        mov qword [gdt + 0x30], 0
        mov qword [tss + 4], stack_top
        mov ax, 0x28
        ltr ax
        mov rdi, 6
        mov rsi, ud_handler
        mov rdx, 0
        call set_gate
        mov rdi, 13
        mov rsi, gp_handler
        call set_gate
        mov rdi, 14
        mov rsi, pf_handler
        call set_gate
        mov rdi, 0x80
        mov rsi, back_to_ring0
        mov rdx, 3
        call set_gate
        lidt [idt_ptr]
        ; Code for the fetch case on key 1's page, written while no key restricts anything.
        mov dword [USER + 0x1000], 0x001234B8   ; mov eax, 0x1234
        mov word [USER + 0x1004], 0xC300        ; (imm high byte 00), ret

        ; ---- CPUID and the instructions' own rules
        mov eax, 7
        xor ecx, ecx
        cpuid
        mov ebx, ecx
        and ecx, 1 << 3
        cmp ecx, 1 << 3
        EXPECT e, "CPUID.7.ECX.PKU"
        test ebx, 1 << 4
        EXPECT z, "OSPKE clear while CR4.PKE = 0"
        xor ecx, ecx
        TRY rdpkru
        cmp qword [exc_vec], 6
        EXPECT e, "RDPKRU with CR4.PKE = 0 is #UD"
        xor ecx, ecx
        xor edx, edx
        xor eax, eax
        TRY wrpkru
        cmp qword [exc_vec], 6
        EXPECT e, "WRPKRU with CR4.PKE = 0 is #UD"

        mov rax, cr4
        or rax, 1 << 22             ; PKE
        mov cr4, rax
        mov eax, 7
        xor ecx, ecx
        cpuid
        test ecx, 1 << 4
        EXPECT nz, "OSPKE set with CR4.PKE = 1"
        mov ecx, 1
        TRY rdpkru
        cmp qword [exc_vec], 13
        EXPECT e, "RDPKRU with ECX = 1 is #GP"
        mov ecx, 0
        mov edx, 1
        mov eax, 0
        TRY wrpkru
        cmp qword [exc_vec], 13
        EXPECT e, "WRPKRU with EDX = 1 is #GP"
        ; Key 1 access-disabled, key 2 write-disabled.
        xor ecx, ecx
        xor edx, edx
        mov eax, (1 << 2) | (2 << 4)
        wrpkru
        mov rax, -1
        mov rdx, -1
        rdpkru
        cmp rax, (1 << 2) | (2 << 4)
        EXPECT e, "RDPKRU returns what WRPKRU wrote"
        test rdx, rdx
        EXPECT z, "RDPKRU clears RDX"

        ; ---- supervisor accesses (CR0.WP = 1)
        TRY mov eax, [USER + 0x1000]
        PF 0x21, USER + 0x1000, "supervisor read of an AD page: #PF P|PK"
        TRY mov dword [USER + 0x2000], 1
        PF 0x23, USER + 0x2000, "supervisor write of a WD page with WP: #PF P|W|PK"
        TRY mov eax, [USER + 0x2000]
        NOFAULT "supervisor read of a WD page"
        TRY mov dword [USER], 1
        NOFAULT "supervisor write of a key-0 page"
        mov rax, cr0
        and rax, ~(1 << 16)
        mov cr0, rax
        TRY mov dword [USER + 0x2000], 1
        NOFAULT "supervisor write of a WD page with WP = 0"
        mov rax, cr0
        or rax, 1 << 16
        mov cr0, rax

        ; ---- user accesses: to ring 3 and back through INT 0x80.
        mov qword [ring0_cont], after_user
        mov [kernel_rsp], rsp
        push 0x1B                   ; SS
        push user_stack_top         ; RSP
        push 0x002                  ; RFLAGS: IF = 0 (no timer interrupt through this IDT)
        push 0x23                   ; CS
        push user_code              ; RIP
        iretq
after_user:
        mov rsp, [kernel_rsp]
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        cmp qword [u_ad_read], 0x25
        EXPECT e, "user read of an AD page: #PF P|U|PK"
        cmp qword [u_wd_write], 0x27
        EXPECT e, "user write of a WD page: #PF P|W|U|PK"
        cmp qword [u_wd_read], -1
        EXPECT e, "user read of a WD page"
        cmp qword [u_ro_write], 0x07
        EXPECT e, "user write of a read-only key-3 page: #PF P|W|U, no PK"
        cmp qword [u_fetch], 0x1234
        EXPECT e, "user fetch from an AD page runs"
        cmp qword [u_wrpkru_gp], 13
        EXPECT e, "WRPKRU at CPL 3 with ECX = 1 is #GP"
        cmp qword [u_cached], 0x25
        EXPECT e, "WRPKRU at CPL 3 applies to a page the TLB holds"

        ; ---- CR4.PKE = 0: keys mean nothing (PKRU still AD for key 1).
        mov rax, cr4
        and rax, ~(1 << 22)
        mov cr4, rax
        TRY mov eax, [USER + 0x1000]
        NOFAULT "CR4.PKE = 0: AD ignored"

        cmp qword [failures], 0
        EXPECT e, "all cases"
        mov rax, [failures]
        out EXIT_PORT, eax
        cli
.hang:  hlt
        jmp .hang

; ---- ring 3 (runs in the user-accessible first 2 MiB; writes its results to memory)
user_code:
        mov qword [u_fetch], 0
        TRY mov eax, [USER + 0x1000]
        mov rax, [exc_err]
        mov [u_ad_read], rax
        TRY mov dword [USER + 0x2000], 1
        mov rax, [exc_err]
        mov [u_wd_write], rax
        TRY mov eax, [USER + 0x2000]
        mov rax, [exc_vec]
        mov [u_wd_read], rax
        TRY mov dword [USER + 0x3000], 1
        mov rax, [exc_err]
        mov [u_ro_write], rax
        ; Fetch: the AD page (key 1) holds "mov eax, 0x1234; ret", written there by ring 0 before the
        ; keys were set.
        mov rax, USER + 0x1000
        call rax
        mov [u_fetch], rax
        mov ecx, 1
        xor edx, edx
        xor eax, eax
        TRY wrpkru
        mov rax, [exc_vec]
        mov [u_wrpkru_gp], rax
        ; A page the TLB holds: key 2's page was read above (allowed, so cached); set AD for key 2
        ; and read it again.
        mov eax, [USER + 0x2000]
        xor ecx, ecx
        xor edx, edx
        mov eax, (1 << 2) | (3 << 4)
        wrpkru
        TRY mov eax, [USER + 0x2000]
        mov rax, [exc_err]
        mov [u_cached], rax
        int 0x80

back_to_ring0:
        jmp [ring0_cont]

; ---- exception handlers: record, resume at [resume]
ud_handler:
        mov qword [exc_vec], 6
        mov qword [exc_err], 0
        jmp resume_frame
gp_handler:
        mov qword [exc_vec], 13
        pop qword [exc_err]
        jmp resume_frame
pf_handler:
        mov qword [exc_vec], 14
        pop qword [exc_err]
        push rax
        mov rax, cr2
        mov [exc_cr2], rax
        pop rax
resume_frame:
        push rax
        mov rax, [resume]
        test rax, rax
        jz unexpected
        mov [rsp + 8], rax
        pop rax
        iretq
; An exception outside a TRY (a CPU without PKU refuses CR4.PKE, say): report it and stop.
unexpected:
        mov rsp, stack_top
        mov rsi, msg_unexpected
        call puts
        mov eax, 0x7f
        out EXIT_PORT, eax
.hang:  hlt
        jmp .hang
msg_unexpected: db "FAIL: exception outside a test case", 10, 0

; set_gate: IDT entry rdi -> handler rsi, DPL rdx (64-bit interrupt gate, selector 0x08).
set_gate:
        push rax
        push rbx
        mov rbx, rdi
        shl rbx, 4
        add rbx, idt
        mov rax, rsi
        mov [rbx], ax
        mov word [rbx + 2], 0x08
        mov rax, rdx
        shl rax, 13
        or rax, 0x8E00
        mov [rbx + 4], ax
        mov rax, rsi
        shr rax, 16
        mov [rbx + 6], ax
        shr rax, 16
        mov [rbx + 8], eax
        mov dword [rbx + 12], 0
        pop rbx
        pop rax
        ret

puts:
        push rax
        push rsi
.l:     lodsb
        test al, al
        jz .d
        out DBG_PORT, al
        jmp .l
.d:     pop rsi
        pop rax
        ret

        align 8
gdt:
        dq 0
        dq 0x00AF9A000000FFFF       ; 0x08 64-bit code, ring 0
        dq 0x00CF92000000FFFF       ; 0x10 data, ring 0
        dq 0x00CFF2000000FFFF       ; 0x18 data, ring 3
        dq 0x00AFFA000000FFFF       ; 0x20 64-bit code, ring 3
        dq 0, 0                     ; 0x28 TSS (filled in)
gdt_end:
gdt_ptr:
        dw gdt_end - gdt - 1
        dq gdt
idt_ptr:
        dw 256 * 16 - 1
        dq idt

failures:   dq 0
load_end:

        absolute load_end
        alignb 4096
pml4:       resb 4096
pdpt:       resb 4096
pd:         resb 4096
pt:         resb 4096
idt:        resb 4096
tss:        resb 104
        alignb 16
exc_vec:    resq 1
exc_err:    resq 1
exc_cr2:    resq 1
resume:     resq 1
ring0_cont: resq 1
kernel_rsp: resq 1
u_ad_read:  resq 1
u_wd_write: resq 1
u_wd_read:  resq 1
u_ro_write: resq 1
u_fetch:    resq 1
u_wrpkru_gp: resq 1
u_cached:   resq 1
        alignb 16
            resb 8192
user_stack_top:
            resb 8192
stack_top:
bss_end:
