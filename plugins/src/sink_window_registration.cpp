/*
 * How TensorRT finds the creator. One source, two libraries (see CMakeLists.txt):
 *
 * - libltexport_trt_plugin.so (LTEXPORT_STATIC_REGISTRATION=1): registers when the library is loaded, for
 *   trtexec --staticPlugins, polygraphy --plugins, Triton's plugins= option, ctypes.CDLL and LD_PRELOAD.
 * - libltexport_trt_plugin_dynamic.so: exports getCreators/setLoggerFinder for IPluginRegistry::loadLibrary
 *   (trtexec --dynamicPlugins, plugins serialized into version-compatible plans). It must not also register on
 *   load: loadLibrary fails when one of the library's creators is already registered.
 *
 * TensorRT for RTX (LTEXPORT_TENSORRT_RTX=1, CMake -DLTEXPORT_TENSORRT_RTX=ON) builds libltexport_trt_plugin.so the
 * getCreators way from the TensorRT 10 headers of a registry package. TensorRT-RTX 1.7.1 has TensorRT 11's ABI
 * where those headers differ (NVIDIA/TensorRT v11.1 include/, and what gdb showed):
 * - IPluginRegistry lost the four IPluginCreator (V2) methods, so registerCreator(IPluginCreatorInterface&) is
 *   slot 8, not 12: a static registration compiled against TensorRT 10 crashes while the library loads. getCreators
 *   makes no call into the registry.
 * - ILogger and ILoggerFinder derive from IVersionedInterface: log() and findLogger() follow getAPILanguage,
 *   getInterfaceInfo and the destructor (slot 4, not 0). VersionedLogger* below mirror that layout.
 * The plugin and creator interfaces (IPluginV3, IPluginV3One*, IPluginCreatorV3One) match slot for slot (compared
 * with the vtables of TensorRT-RTX's Python plugin trampolines).
 */
#include "sink_window_plugin.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>

#ifndef LTEXPORT_STATIC_REGISTRATION
#define LTEXPORT_STATIC_REGISTRATION 0
#endif
#ifndef LTEXPORT_TENSORRT_RTX
#define LTEXPORT_TENSORRT_RTX 0
#endif
#if LTEXPORT_TENSORRT_RTX && LTEXPORT_STATIC_REGISTRATION
#error "TensorRT-RTX builds register through getCreators (see the comment above)"
#endif

// TENSORRTAPI only exports when building libnvinfer itself; the library is built with hidden visibility.
#define LTEXPORT_API __attribute__((visibility("default")))

namespace ltexport
{
#if LTEXPORT_TENSORRT_RTX
// TensorRT 11's (and TensorRT-RTX 1.7's) ILogger and ILoggerFinder. Not in an anonymous namespace: with internal
// linkage and no subclass in sight, GCC turns calls through them into __cxa_pure_virtual.
class VersionedLogger : public nvinfer1::IVersionedInterface
{
public:
    virtual void log(nvinfer1::ILogger::Severity severity, nvinfer1::AsciiChar const* msg) noexcept = 0;
};

class VersionedLoggerFinder : public nvinfer1::IVersionedInterface
{
public:
    virtual VersionedLogger* findLogger() = 0;
};
#endif

namespace
{
// Set by setLoggerFinder; its real type is nvinfer1::ILoggerFinder, or VersionedLoggerFinder under TensorRT-RTX.
std::atomic<void*> gLoggerFinder{nullptr};

#if LTEXPORT_TENSORRT_RTX
bool isInterface(nvinfer1::IVersionedInterface const* object, char const* kind) noexcept
{
    return object != nullptr && std::strcmp(object->getInterfaceInfo().kind, kind) == 0;
}

// The builder's or runtime's logger, checked to be the versioned kind before its log() is called.
bool logToTensorRT(nvinfer1::ILogger::Severity severity, char const* line) noexcept
{
    auto* finder = static_cast<VersionedLoggerFinder*>(gLoggerFinder.load());
    if (!isInterface(finder, "ILoggerFinder"))
    {
        return false;
    }
    VersionedLogger* logger = finder->findLogger();
    if (!isInterface(logger, "ILogger"))
    {
        return false;
    }
    logger->log(severity, line);
    return true;
}
#else
bool logToTensorRT(nvinfer1::ILogger::Severity severity, char const* line) noexcept
{
    nvinfer1::ILogger* logger = nullptr;
    if (auto* finder = static_cast<nvinfer1::ILoggerFinder*>(gLoggerFinder.load()))
    {
        logger = finder->findLogger();
    }
#if LTEXPORT_STATIC_REGISTRATION
    if (logger == nullptr)
    {
        logger = getLogger(); // libnvinfer's logger for standalone functions; may be unset
    }
#endif
    if (logger == nullptr)
    {
        return false;
    }
    logger->log(severity, line);
    return true;
}
#endif
} // namespace

void pluginLog(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const line = std::string("[ltexport::SinkWindowAttention] ") + message;
        if (!logToTensorRT(severity, line.c_str()) && severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            std::fprintf(stderr, "%s\n", line.c_str());
        }
    }
    catch (...)
    {
        // logging must never throw across the ABI boundary
    }
}
} // namespace ltexport

#if LTEXPORT_STATIC_REGISTRATION
namespace
{
// What REGISTER_TENSORRT_PLUGIN does, except that it registers under the creator's namespace: the macro passes "",
// and registries that key creators on that argument would then not match the node's plugin_namespace="ltexport".
class StaticRegistration
{
public:
    StaticRegistration() noexcept
    {
        try
        {
            nvinfer1::IPluginRegistry* registry = getPluginRegistry();
            if (registry == nullptr || !registry->registerCreator(mCreator, ltexport::kPLUGIN_NAMESPACE))
            {
                ltexport::pluginLog(nvinfer1::ILogger::Severity::kWARNING,
                    "could not register the plugin creator (already registered by another library?)");
            }
        }
        catch (std::exception const& e)
        {
            ltexport::pluginLog(nvinfer1::ILogger::Severity::kERROR, e.what());
        }
    }

private:
    ltexport::SinkWindowAttentionCreator mCreator;
};

StaticRegistration gStaticRegistration;
} // namespace
#else
extern "C" LTEXPORT_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static ltexport::SinkWindowAttentionCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

extern "C" LTEXPORT_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    ltexport::gLoggerFinder.store(finder);
}
#endif
