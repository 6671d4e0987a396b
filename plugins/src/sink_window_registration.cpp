/*
 * How TensorRT finds the creator. One source, two libraries (see CMakeLists.txt):
 *
 * - libltexport_trt_plugin.so (LTEXPORT_STATIC_REGISTRATION=1): registers when the library is loaded, for
 *   trtexec --staticPlugins, polygraphy --plugins, Triton's plugins= option, ctypes.CDLL and LD_PRELOAD.
 * - libltexport_trt_plugin_dynamic.so: exports getCreators/setLoggerFinder for IPluginRegistry::loadLibrary
 *   (trtexec --dynamicPlugins, plugins serialized into version-compatible plans). It must not also register on
 *   load: loadLibrary fails when one of the library's creators is already registered.
 */
#include "sink_window_plugin.h"

#include <atomic>
#include <cstdio>
#include <exception>

#ifndef LTEXPORT_STATIC_REGISTRATION
#define LTEXPORT_STATIC_REGISTRATION 0
#endif

// TENSORRTAPI only exports when building libnvinfer itself; the library is built with hidden visibility.
#define LTEXPORT_API __attribute__((visibility("default")))

namespace ltexport
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void pluginLog(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    try
    {
        std::string const line = std::string("[ltexport::SinkWindowAttention] ") + message;
        nvinfer1::ILogger* logger = nullptr;
        if (nvinfer1::ILoggerFinder* finder = gLoggerFinder.load())
        {
            logger = finder->findLogger();
        }
#if LTEXPORT_STATIC_REGISTRATION
        if (logger == nullptr)
        {
            logger = getLogger(); // libnvinfer's logger for standalone functions; may be unset
        }
#endif
        if (logger != nullptr)
        {
            logger->log(severity, line.c_str());
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
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
