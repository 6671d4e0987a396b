/*
 * Loads a built libltexport_trt_plugin_dynamic.so the way IPluginRegistry::loadLibrary does (dlopen, then the
 * exported getCreators / setLoggerFinder) and checks the creator it hands out. Needs TensorRT headers only:
 * no libnvinfer, no GPU (nothing here launches a kernel). Usage: plugin_load_test path/to/library.so
 */
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>

using namespace nvinfer1;

namespace
{
class CountingLogger : public ILogger
{
public:
    void log(Severity, AsciiChar const* msg) noexcept override
    {
        ++messages;
        std::fprintf(stderr, "  logged: %s\n", msg);
    }
    int messages = 0;
};

class Finder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &logger;
    }
    CountingLogger logger;
};

int fail(char const* what)
{
    std::fprintf(stderr, "plugin_load_test: %s\n", what);
    return 1;
}
} // namespace

int main(int argc, char** argv)
{
    if (argc != 2)
    {
        return fail("usage: plugin_load_test LIBRARY");
    }
    void* handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        return fail(dlerror());
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(handle, "setLoggerFinder"));
    if (getCreators == nullptr || setLoggerFinder == nullptr)
    {
        return fail("getCreators / setLoggerFinder are not exported");
    }
    Finder finder;
    setLoggerFinder(&finder);
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    if (n != 1 || creators == nullptr || creators[0] == nullptr)
    {
        return fail("expected exactly one creator");
    }
    if (std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
    {
        return fail("the creator is not an IPluginCreatorV3One");
    }
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    if (std::string(creator->getPluginName()) != "SinkWindowAttention" || std::string(creator->getPluginVersion()) != "1"
        || std::string(creator->getPluginNamespace()) != "ltexport")
    {
        return fail("creator name/version/namespace differ from SinkWindowAttention/1/ltexport");
    }
    int32_t sink = 4;
    int32_t window = 1020;
    float scale = 0.125f;
    char const prefill[] = "dense";
    PluginField fields[] = {PluginField("sink", &sink, PluginFieldType::kINT32, 1),
        PluginField("window", &window, PluginFieldType::kINT32, 1),
        PluginField("scale", &scale, PluginFieldType::kFLOAT32, 1),
        PluginField("prefill", prefill, PluginFieldType::kCHAR, sizeof(prefill))};
    PluginFieldCollection fc{4, fields};
    IPluginV3* plugin = creator->createPlugin("layer0", &fc, TensorRTPhase::kBUILD);
    if (plugin == nullptr || plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME) == nullptr)
    {
        return fail("createPlugin failed for valid fields");
    }
    delete plugin;
    window = 0; // invalid: must come back as nullptr with a message through the finder's logger
    if (creator->createPlugin("layer1", &fc, TensorRTPhase::kBUILD) != nullptr || finder.logger.messages == 0)
    {
        return fail("an invalid field was not refused through the logger");
    }
    std::printf("plugin_load_test: %s exports one SinkWindowAttention creator (ltexport, version 1)\n", argv[1]);
    return 0;
}
