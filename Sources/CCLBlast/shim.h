// Must match Sources/COpenCL/shim.h (see there).
#define CL_TARGET_OPENCL_VERSION 120
#include <clblast_c.h>
