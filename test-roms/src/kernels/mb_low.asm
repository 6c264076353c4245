; mb_low: a multiboot (v1) kernel loaded low, over the page where QEMU puts its boot information.
;
; A flat image with the a.out-kludge address fields (header flag 16), loaded at 0x8000; its data
; covers 0x9000-0x9FFF (a known pattern) and its bss runs to 0xB000. Booted like mb_testdev:
;
;   qemu-system-x86_64 -kernel mb_low.bin -append mbtest -initrd "MODULE modarg" -m 128 \
;     -device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon stdio -display none
;
; Covers (Multiboot Specification 0.6.96, 3.3: "The Multiboot information structure and its related
; substructures may be placed anywhere in memory by the boot loader (with the exception of the memory
; reserved for the kernel and boot modules, of course)"): the kernel's bytes arrive intact and its bss
; is zero; the information structure, the memory map, the command line, the module list, the module's
; command line and the module itself all lie clear of the kernel's 0x8000-0xB000 and hold what they
; should (flags, "mbtest", "FERRITE-MODULE", "modarg", an available entry at 1 MiB).
;
; QEMU quirk (-DQEMU_QUIRKS: only the kernel's own bytes, its bss and EAX are checked): QEMU 7.2 puts
; the memory map at 0x9000 and the information structure at 0x9500 whatever the kernel's addresses
; (hw/i386/multiboot.c, ADDR_E820_MAP / ADDR_MBI) and then loads the kernel over them, so EBX points
; at the kernel's own bytes: against 3.3 above, which the test follows.

        bits 32
        cpu 686
        org 0x8000

MB_MAGIC    equ 0x1BADB002
MB_FLAGS    equ 0x00010003          ; page-align modules, memory info, address fields valid
DBG_PORT    equ 0xE9
EXIT_PORT   equ 0xF4
KSTART      equ 0x8000
PATTERN     equ 0x9000
STACK_TOP   equ 0x7800              ; below the kernel (ESP is undefined at entry)

mb_header:
        dd MB_MAGIC
        dd MB_FLAGS
        dd -(MB_MAGIC + MB_FLAGS)
        dd mb_header                ; header_addr
        dd mb_header                ; load_addr
        dd load_end                 ; load_end_addr
        dd bss_end                  ; bss_end_addr
        dd start                    ; entry_addr

; EXPECT cc, "name": PASS if condition cc holds (flags from the preceding compare), else FAIL.
%macro EXPECT 2
        push esi
        j%1 %%ok
        mov esi, %%fail_msg
        inc dword [failures]
        call puts
        jmp %%done
%%fail_msg: db "FAIL: ", %2, 10, 0
%%ok:
        mov esi, %%pass_msg
        call puts
        jmp %%done
%%pass_msg: db "PASS: ", %2, 10, 0
%%done:
        pop esi
%endmacro

; CLEAR start, end, "name": PASS if [start, end) does not overlap the kernel's [KSTART, bss_end).
; Clobbers eax and edx.
%macro CLEAR 3
        mov eax, %1
        mov edx, %2
        call clear_of_kernel
        test eax, eax
        EXPECT nz, %3
%endmacro

puts:
        push eax
        push esi
.l:     lodsb
        test al, al
        jz .d
        out DBG_PORT, al
        jmp .l
.d:     pop esi
        pop eax
        ret

; clear_of_kernel: eax = 1 if [eax, edx) lies below KSTART or at/after bss_end, else 0.
clear_of_kernel:
        cmp edx, KSTART
        jbe .yes
        cmp eax, bss_end
        jae .yes
        xor eax, eax
        ret
.yes:   mov eax, 1
        ret

; strstr: eax = 1 if the NUL-terminated string at EDI occurs in the one at ESI.
strstr:
        push esi
        push ecx
        push edx
.outer: mov ecx, esi
        mov edx, edi
.inner: mov al, [edx]
        test al, al
        jz .found
        cmp al, [ecx]
        jne .next
        inc ecx
        inc edx
        jmp .inner
.next:  cmp byte [esi], 0
        je .nope
        inc esi
        jmp .outer
.found: mov eax, 1
        jmp .ret
.nope:  xor eax, eax
.ret:   pop edx
        pop ecx
        pop esi
        ret

; strend: eax = the address after the NUL of the string at ESI.
strend:
        mov eax, esi
.l:     inc eax
        cmp byte [eax - 1], 0
        jne .l
        ret

start:
        mov esp, STACK_TOP
        mov [boot_eax], eax
        mov [boot_ebx], ebx
        cld
        cmp dword [boot_eax], 0x2BADB002
        EXPECT e, "EAX holds the multiboot magic"

        ; The kernel's own bytes and bss.
        mov esi, PATTERN
        xor ecx, ecx
.pat:   lea eax, [ecx + 0x5A5A0000]
        cmp [esi + ecx * 4], eax
        jne .patdone
        inc ecx
        cmp ecx, 0x400
        jb .pat
.patdone:
        cmp ecx, 0x400
        EXPECT e, "kernel data at 0x9000-0x9FFF intact"
        mov edi, bss_check
        mov ecx, (bss_end - bss_check) / 4
        xor eax, eax
        repe scasd
        EXPECT e, "bss zero"

%ifndef QEMU_QUIRKS
        mov ebx, [boot_ebx]
        lea edx, [ebx + 88]
        CLEAR ebx, edx, "information structure clear of the kernel"
        mov eax, [ebx]
        and eax, 0x4d               ; memory, cmdline, mods, mmap
        cmp eax, 0x4d
        EXPECT e, "mbi flags: memory, cmdline, modules, mmap"

        mov esi, [ebx + 16]
        call strend
        CLEAR esi, eax, "command line clear of the kernel"
        mov edi, str_mbtest
        call strstr
        test eax, eax
        EXPECT nz, "command line contains mbtest"

        mov esi, [ebx + 48]
        mov edx, [ebx + 44]
        add edx, esi
        CLEAR esi, edx, "memory map clear of the kernel"
        mov ecx, edx
        xor edx, edx
.mm:    cmp esi, ecx
        jae .mmdone
        cmp dword [esi + 20], 1
        jne .mmnext
        cmp dword [esi + 8], 0
        jne .mmnext
        cmp dword [esi + 4], 0x100000
        ja .mmnext
        mov eax, [esi + 4]
        add eax, [esi + 12]
        cmp eax, 0x100000
        jbe .mmnext
        mov edx, 1
.mmnext:
        add esi, [esi]
        add esi, 4
        jmp .mm
.mmdone:
        cmp edx, 1
        EXPECT e, "memory map has available RAM at 1 MiB"

        cmp dword [ebx + 20], 1
        EXPECT e, "one module"
        mov esi, [ebx + 24]
        lea edx, [esi + 16]
        CLEAR esi, edx, "module list clear of the kernel"
        mov edx, [ebx + 24]
        mov esi, [edx]
        mov eax, [edx + 4]
        cmp eax, esi
        EXPECT a, "module end after start"
        CLEAR [edx], [edx + 4], "module clear of the kernel"
        mov edx, [ebx + 24]             ; (CLEAR clobbers eax and edx)
        mov esi, [edx]
        mov edi, str_module
        mov ecx, 14
        repe cmpsb
        EXPECT e, "module contents"
        mov esi, [edx + 8]
        call strend
        CLEAR esi, eax, "module command line clear of the kernel"
        mov edi, str_modarg
        call strstr
        test eax, eax
        EXPECT nz, "module command line has modarg"
%endif

        cmp dword [failures], 0
        EXPECT e, "all cases"
        mov eax, [failures]
        out EXIT_PORT, eax
        cli
.hang:  hlt
        jmp .hang

str_mbtest: db "mbtest", 0
str_modarg: db "modarg", 0
str_module: db "FERRITE-MODULE"

        align 4
failures:   dd 0

        times PATTERN - KSTART - ($ - $$) db 0
%assign i 0
%rep 0x400
        dd 0x5A5A0000 + i
%assign i i + 1
%endrep
load_end:

        absolute load_end
bss_start:
boot_eax:   resd 1
boot_ebx:   resd 1
bss_check:
        resb 0xB000 - 0xA000 - 8
bss_end:
