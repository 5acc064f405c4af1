// Must match Sources/CCLBlast/shim.h: clblast_c.h includes CL/cl.h too, and two different
// target versions make the two Clang modules disagree about OpenCL's structs.
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
