/* Stand-in for nvidia-peermem.ko: needs nvidia and the InfiniBand core (ib_core), as the real one
 * needs MOFED's or the inbox ib_core's peer-memory hooks. */
#include <linux/module.h>
#include <rdma/ib_verbs.h>
#include "nvfake.h"

static struct ib_client peermem_client = { .name = "nvidia_peermem_stand_in" };

static int __init peermem_init(void)
{
	NVFAKE_REQUIRE_SAME_VERSION("nvidia-peermem");
	return ib_register_client(&peermem_client);
}

static void __exit peermem_exit(void) { ib_unregister_client(&peermem_client); }

module_init(peermem_init);
module_exit(peermem_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION(NV_VERSION_STRING);
