/* Stand-in for nvidia-modeset.ko: holds nvidia, is held by nvidia_drm. */
#include <linux/module.h>
#include "nvfake.h"

int nvfake_modeset_users(void) { return nvfake_core_users(); }
EXPORT_SYMBOL(nvfake_modeset_users);

static int __init modeset_init(void)
{
	NVFAKE_REQUIRE_SAME_VERSION("nvidia-modeset");
	return 0;
}
static void __exit modeset_exit(void) {}

module_init(modeset_init);
module_exit(modeset_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION(NV_VERSION_STRING);
