/* Start-up code and vector table for a Cortex-M4F bare-metal program (the mps2-an386 board under
 * qemu-system-arm), with newlib's semihosting library (librdimon) for stdio and exit.
 *
 * Reset: enable the FPU (the program is built with -mfloat-abi=hard), copy .data from flash, zero .bss,
 * open the semihosting stdio handles, run the C++/constructor arrays, then exit(main()). A fault prints
 * one line through semihosting and stops the emulator, so a broken build fails fast instead of hanging.
 */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__;

extern int main(void);
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);

void Reset_Handler(void);
void Fault_Handler(void);
void _init(void);
void _fini(void);

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SEMIHOSTING_SYS_OPEN 0x01u
#define SEMIHOSTING_SYS_WRITE 0x05u
#define SEMIHOSTING_SYS_EXIT 0x18u
#define SEMIHOSTING_OPEN_WRITE 4u /* fopen mode "w": ":tt" opened so is the host's stdout */
#define ADP_STOPPED_RUN_TIME_ERROR 0x20023u

static uint32_t semihost(uint32_t operation, const void *argument)
{
	register uint32_t r0 __asm__("r0") = operation;
	register const void *r1 __asm__("r1") = argument;
	__asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
	return r0;
}

/* Straight to the host's stdout, where the self-test's verdict is read, without the C library. */
void Fault_Handler(void)
{
	static const char console[] = ":tt", message[] = "FAULT: the processor took an exception\nFAIL\n";
	uint32_t open[3] = {(uint32_t)console, SEMIHOSTING_OPEN_WRITE, sizeof console - 1};
	uint32_t write[3] = {0, (uint32_t)message, sizeof message - 1};

	write[0] = semihost(SEMIHOSTING_SYS_OPEN, open);
	semihost(SEMIHOSTING_SYS_WRITE, write);
	semihost(SEMIHOSTING_SYS_EXIT, (const void *)ADP_STOPPED_RUN_TIME_ERROR);
	for (;;) {
	}
}

/* newlib's init/fini arrays call these (crti.o has them; -nostartfiles leaves it out): nothing to do */
void _init(void)
{
}

void _fini(void)
{
}

void Reset_Handler(void)
{
	const uint32_t *from = &__data_load__;
	uint32_t *to;

	SCB_CPACR |= 0xFu << 20; /* CP10 and CP11 (the FPU): full access */
	__asm__ volatile("dsb\n\tisb" ::: "memory");
	for (to = &__data_start__; to < &__data_end__;)
		*to++ = *from++;
	for (to = &__bss_start__; to < &__bss_end__;)
		*to++ = 0;
	initialise_monitor_handles();
	__libc_init_array();
	exit(main());
}

/* The vector table: the initial stack pointer, then the handlers: reset, NMI, HardFault, MemManage,
 * BusFault, UsageFault. */
typedef void (*handler)(void);
struct vector_table {
	const uint32_t *stack_top;
	handler handlers[6];
};
__attribute__((section(".vectors"), used)) static const struct vector_table vectors = {
	&__stack_top__,
	{Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler},
};
