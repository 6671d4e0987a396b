/*
 * Host-only test of the IPluginV3 glue, built against TensorRT headers (no libnvinfer, no GPU): the creator's
 * field validation, capability interfaces, type/format/shape negotiation, workspace sizing, aliasing,
 * serialisation round trip, and enqueue() driving the kernels through the CPU emulation
 * (sink_window_kernels.cu compiled with LT_CPU_EMULATION). Exit status 0 = all checks passed.
 */
#include "sink_window_kernels.h"
#include "sink_window_plugin.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace nvinfer1;
using ltexport::SinkWindowAttentionCreator;
using ltexport::SinkWindowAttentionPlugin;

namespace
{
int gFailures = 0;
std::string gLastLog;          // the last warning or error
std::vector<std::string> gTrace; // kVERBOSE lines: the build-time call trace

bool traced(std::string const& needle)
{
    for (auto const& line : gTrace)
    {
        if (line.find(needle) != std::string::npos)
            return true;
    }
    return false;
}

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::fprintf(stderr, "FAILED %s:%d: %s (last log: %s)\n", __FILE__, __LINE__, #cond, gLastLog.c_str());  \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

struct Fields
{
    int32_t sink = 2;
    int64_t sink64 = 2;
    int32_t window = 3;
    float scale = 0.5f;
    double scale64 = 0.5;
    float nanScale = NAN;
    int32_t zero = 0;
    std::string dense = "dense";
    std::string streaming = "streaming";
    std::string bogus = "bogus";
    std::string ns = "ltexport";
    std::string wrongNs = "other";
    std::vector<PluginField> list;

    // Like the ONNX parser: INT -> kINT32, FLOAT -> kFLOAT32, STRING -> kCHAR with the NUL counted.
    Fields& base(std::string const* prefill = nullptr)
    {
        list = {PluginField("sink", &sink, PluginFieldType::kINT32, 1),
            PluginField("window", &window, PluginFieldType::kINT32, 1),
            PluginField("scale", &scale, PluginFieldType::kFLOAT32, 1), str("prefill", prefill ? *prefill : dense)};
        return *this;
    }
    static PluginField str(char const* name, std::string const& s)
    {
        return PluginField(name, s.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(s.size() + 1));
    }
    Fields& set(PluginField f)
    {
        for (auto& g : list)
        {
            if (std::strcmp(g.name, f.name) == 0)
            {
                g = f;
                return *this;
            }
        }
        list.push_back(f);
        return *this;
    }
    Fields& drop(char const* name)
    {
        for (size_t i = 0; i < list.size(); ++i)
        {
            if (std::strcmp(list[i].name, name) == 0)
            {
                list.erase(list.begin() + static_cast<long>(i));
                break;
            }
        }
        return *this;
    }
    PluginFieldCollection fc() const
    {
        return PluginFieldCollection{static_cast<int32_t>(list.size()), list.data()};
    }
};

std::unique_ptr<IPluginV3> create(SinkWindowAttentionCreator& creator, Fields const& f,
    TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    PluginFieldCollection const fc = f.fc();
    return std::unique_ptr<IPluginV3>(creator.createPlugin("node0", &fc, phase));
}

Dims dims4(int64_t a, int64_t b, int64_t c, int64_t d)
{
    Dims x{};
    x.nbDims = 4;
    x.d[0] = a;
    x.d[1] = b;
    x.d[2] = c;
    x.d[3] = d;
    return x;
}

Dims dims1(int64_t a)
{
    Dims x{};
    x.nbDims = 1;
    x.d[0] = a;
    return x;
}

// One problem's tensor descriptors. Build-time descriptors make batch (all inputs) and seq (query/key/value)
// dynamic (-1 with a min..max range), like an optimization profile does.
struct Problem
{
    int64_t b, hq, hkv, t, d, ring;
    DataType type = DataType::kFLOAT;

    std::vector<PluginTensorDesc> inputs() const
    {
        Dims const all[6] = {dims4(b, hq, t, d), dims4(b, hkv, t, d), dims4(b, hkv, t, d), dims4(b, hkv, ring, d),
            dims4(b, hkv, ring, d), dims1(b)};
        std::vector<PluginTensorDesc> v;
        for (int i = 0; i < 6; ++i)
            v.push_back(PluginTensorDesc{all[i], i == 5 ? DataType::kINT64 : type, TensorFormat::kLINEAR, 1.f});
        return v;
    }
    std::vector<PluginTensorDesc> outputs() const
    {
        std::vector<PluginTensorDesc> v;
        for (Dims const& x : {dims4(b, hq, t, d), dims4(b, hkv, ring, d), dims4(b, hkv, ring, d)})
            v.push_back(PluginTensorDesc{x, type, TensorFormat::kLINEAR, 1.f});
        return v;
    }
    static std::vector<DynamicPluginTensorDesc> dynamic(
        std::vector<PluginTensorDesc> const& descs, size_t nbSeq, int64_t minT, int64_t maxT)
    {
        std::vector<DynamicPluginTensorDesc> v;
        for (size_t i = 0; i < descs.size(); ++i)
        {
            DynamicPluginTensorDesc x{};
            x.desc = descs[i];
            x.min = x.max = x.opt = descs[i].dims;
            x.desc.dims.d[0] = -1;
            x.min.d[0] = 1;
            if (i < nbSeq)
            {
                x.desc.dims.d[2] = -1;
                x.min.d[2] = minT;
                x.max.d[2] = maxT;
                x.opt.d[2] = maxT;
            }
            v.push_back(x);
        }
        return v;
    }
    std::vector<DynamicPluginTensorDesc> dynamicInputs(int64_t minT = 1, int64_t maxT = 8) const
    {
        return dynamic(inputs(), 3, minT, maxT);
    }
    std::vector<DynamicPluginTensorDesc> dynamicOutputs(int64_t minT = 1, int64_t maxT = 8) const
    {
        return dynamic(outputs(), 1, minT, maxT);
    }
};

void testCreator()
{
    SinkWindowAttentionCreator creator;
    CHECK(std::string(creator.getPluginName()) == "SinkWindowAttention");
    CHECK(std::string(creator.getPluginVersion()) == "1");
    CHECK(std::string(creator.getPluginNamespace()) == "ltexport");
    PluginFieldCollection const* names = creator.getFieldNames();
    CHECK(names != nullptr && names->nbFields == 4);

    Fields f;
    CHECK(create(creator, f.base()) != nullptr);
    CHECK(create(creator, f.base(&f.streaming)) != nullptr);
    CHECK(create(creator, f.base().set(Fields::str("plugin_namespace", f.ns))) != nullptr);
    CHECK(create(creator, f.base().set(PluginField("sink", &f.sink64, PluginFieldType::kINT64, 1))) != nullptr);
    CHECK(create(creator, f.base().set(PluginField("scale", &f.scale64, PluginFieldType::kFLOAT64, 1))) != nullptr);
    CHECK(create(creator, f.base().set(PluginField("sink", &f.zero, PluginFieldType::kINT32, 1))) != nullptr);
    // Every bad field is refused with a null plugin (and a log line), never an exception.
    gLastLog.clear();
    CHECK(create(creator, f.base().drop("scale")) == nullptr);
    CHECK(gLastLog.find("missing field 'scale'") != std::string::npos);
    CHECK(create(creator, f.base().set(PluginField("window", &f.zero, PluginFieldType::kINT32, 1))) == nullptr);
    CHECK(create(creator, f.base(&f.bogus)) == nullptr);
    CHECK(create(creator, f.base().set(PluginField("scale", &f.nanScale, PluginFieldType::kFLOAT32, 1))) == nullptr);
    CHECK(create(creator, f.base().set(PluginField("scale", &f.sink, PluginFieldType::kINT32, 1))) == nullptr);
    CHECK(create(creator, f.base().set(PluginField("sink", &f.scale, PluginFieldType::kFLOAT32, 1))) == nullptr);
    CHECK(create(creator, f.base().set(PluginField("sink", &f.sink, PluginFieldType::kINT32, 2))) == nullptr);
    CHECK(create(creator, f.base().set(PluginField("sink", nullptr, PluginFieldType::kINT32, 1))) == nullptr);
    CHECK(create(creator, f.base().set(PluginField("unknown", &f.sink, PluginFieldType::kINT32, 1))) == nullptr);
    CHECK(create(creator, f.base().set(Fields::str("plugin_namespace", f.wrongNs))) == nullptr);
    Fields dup;
    dup.base();
    dup.list.push_back(PluginField("sink", &dup.sink, PluginFieldType::kINT32, 1));
    CHECK(create(creator, dup) == nullptr);
    CHECK(creator.createPlugin("n", nullptr, TensorRTPhase::kBUILD) == nullptr);
}

void testCapabilitiesAndSerialization()
{
    SinkWindowAttentionCreator creator;
    Fields f;
    f.base(&f.streaming);
    auto plugin = create(creator, f);
    CHECK(plugin != nullptr);
    if (!plugin)
        return;
    auto* core = dynamic_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = dynamic_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = dynamic_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(core && build && runtime);
    if (!(core && build && runtime))
        return;
    CHECK(std::string(core->getPluginNamespace()) == "ltexport");
    InterfaceInfo const info = build->getInterfaceInfo();
    CHECK(std::string(info.kind) == "PLUGIN_V3ONE_BUILD");
    CHECK(info.major == (LTEXPORT_TRT_ALIASED_IO ? 2 : 1));
    CHECK(std::string(build->getMetadataString()).find("prefill=streaming") != std::string::npos);

    // Serialise -> runtime-phase creation gives the same config.
    PluginFieldCollection const* fields = runtime->getFieldsToSerialize();
    std::unique_ptr<IPluginV3> again(creator.createPlugin("node0", fields, TensorRTPhase::kRUNTIME));
    CHECK(again != nullptr);
    auto const* a = dynamic_cast<SinkWindowAttentionPlugin*>(plugin.get());
    auto const* b = dynamic_cast<SinkWindowAttentionPlugin*>(again.get());
    CHECK(a && b && a->config().sink == b->config().sink && a->config().window == b->config().window
        && a->config().scale == b->config().scale && a->config().prefillMode == b->config().prefillMode);
    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    std::unique_ptr<IPluginV3> attached(runtime->attachToContext(nullptr));
    CHECK(cloned != nullptr && attached != nullptr);
}

struct FakeExprBuilder : IExprBuilder
{
};

void testBuildNegotiation()
{
    SinkWindowAttentionCreator creator;
    Fields f;
    auto plugin = create(creator, f.base()); // S=2, W=3: ring of 5
    auto* build = dynamic_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    CHECK(build != nullptr);
    if (!build)
        return;
    CHECK(build->getNbOutputs() == 3);

    DataType const in[6] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF,
        DataType::kINT64};
    DataType out[3] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
    CHECK(build->getOutputDataTypes(out, 3, in, 6) == 0);
    CHECK(out[0] == DataType::kHALF && out[1] == DataType::kHALF && out[2] == DataType::kHALF);
    DataType badLen[6] = {DataType::kBF16, DataType::kBF16, DataType::kBF16, DataType::kBF16, DataType::kBF16,
        DataType::kINT32};
    CHECK(build->getOutputDataTypes(out, 3, badLen, 6) != 0);
    DataType mixed[6] = {DataType::kHALF, DataType::kFLOAT, DataType::kHALF, DataType::kHALF, DataType::kHALF,
        DataType::kINT64};
    CHECK(build->getOutputDataTypes(out, 3, mixed, 6) != 0);
    DataType ints[6] = {DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kINT32, DataType::kINT32,
        DataType::kINT64};
    CHECK(build->getOutputDataTypes(out, 3, ints, 6) != 0);

    // Output shapes copy the input expressions (no expression needs evaluating).
    DimsExprs inExprs[6]{};
    for (int i = 0; i < 6; ++i)
        inExprs[i].nbDims = i == 5 ? 1 : 4;
    DimsExprs outExprs[3]{};
    FakeExprBuilder exprs;
    CHECK(build->getOutputShapes(inExprs, 6, nullptr, 0, outExprs, 3, exprs) == 0);
    CHECK(outExprs[0].nbDims == 4 && outExprs[1].nbDims == 4 && outExprs[2].nbDims == 4);
    CHECK(build->getOutputShapes(inExprs, 5, nullptr, 0, outExprs, 3, exprs) != 0);
    inExprs[3].nbDims = 3;
    CHECK(build->getOutputShapes(inExprs, 6, nullptr, 0, outExprs, 3, exprs) != 0);

    // Formats: linear only; one float dtype for all but past_len (int64).
    Problem const p{4, 6, 2, 3, 16, 5, DataType::kBF16};
    auto io = p.dynamicInputs();
    auto outs = p.dynamicOutputs();
    io.insert(io.end(), outs.begin(), outs.end());
    for (int pos = 0; pos < 9; ++pos)
        CHECK(build->supportsFormatCombination(pos, io.data(), 6, 3));
    io[5].desc.type = DataType::kINT32;
    CHECK(!build->supportsFormatCombination(5, io.data(), 6, 3));
    io[5].desc.type = DataType::kINT64;
    io[7].desc.type = DataType::kHALF;
    CHECK(!build->supportsFormatCombination(7, io.data(), 6, 3));
    io[7].desc.type = DataType::kBF16;
    io[0].desc.format = TensorFormat::kHWC8;
    CHECK(!build->supportsFormatCombination(0, io.data(), 6, 3));
    io[0].desc.format = TensorFormat::kLINEAR;
    io[0].desc.type = DataType::kINT8;
    CHECK(!build->supportsFormatCombination(0, io.data(), 6, 3));

    // configurePlugin: consistent shapes pass; a wrong ring length, GQA ratio or head_dim is refused.
    auto good = p.dynamicInputs();
    auto goodOut = p.dynamicOutputs();
    gTrace.clear();
    CHECK(build->configurePlugin(good.data(), 6, goodOut.data(), 3) == 0);
    CHECK(traced("configurePlugin: node=node0 batch=1..4 seq=1..8 q_heads=6 kv_heads=2 head_dim=16 ring=5 "
                 "dtype=bfloat16 past_len=int64 format=linear"));
    auto wrongRing = Problem{4, 6, 2, 3, 16, 6, DataType::kBF16}.dynamicInputs();
    gLastLog.clear();
    CHECK(build->configurePlugin(wrongRing.data(), 6, goodOut.data(), 3) != 0);
    CHECK(gLastLog.find("expected sink + window = 5") != std::string::npos);
    auto badGqa = Problem{4, 5, 2, 3, 16, 5, DataType::kBF16}.dynamicInputs();
    CHECK(build->configurePlugin(badGqa.data(), 6, goodOut.data(), 3) != 0);
    auto bigHead = Problem{4, 6, 2, 3, 512, 5, DataType::kBF16}.dynamicInputs();
    CHECK(build->configurePlugin(bigHead.data(), 6, goodOut.data(), 3) != 0);
    auto badBatch = p.dynamicInputs();
    badBatch[3].desc.dims.d[0] = 3;
    badBatch[0].desc.dims.d[0] = 4;
    CHECK(build->configurePlugin(badBatch.data(), 6, goodOut.data(), 3) != 0);
    CHECK(build->configurePlugin(good.data(), 5, goodOut.data(), 3) != 0);
    gLastLog.clear();
    CHECK(build->configurePlugin(good.data(), 6, nullptr, 3) != 0);
    CHECK(gLastLog.find("configurePlugin: missing output descriptors") != std::string::npos);

    // Workspace: sized for the profile's largest batch when decode (T == 1) is possible, else none.
    Fields wf;
    wf.window = 1022;
    auto wp = create(creator, wf.base()); // ring 1024
    auto* wb = dynamic_cast<IPluginV3OneBuild*>(wp->getCapabilityInterface(PluginCapabilityType::kBUILD));
    Problem const dec{2, 8, 2, 1, 128, 1024, DataType::kHALF};
    auto decIn = dec.dynamicInputs(1, 64);
    auto decOut = dec.dynamicOutputs(1, 64);
    size_t const ws = wb->getWorkspaceSize(decIn.data(), 6, decOut.data(), 3);
    CHECK(ws > 0 && ws == lt_sink_window_workspace_size(LT_DTYPE_FP16, 2, 8, 2, 2, 1022, 128));
    auto prefillOnly = dec.dynamicInputs(2, 64);
    CHECK(wb->getWorkspaceSize(prefillOnly.data(), 6, decOut.data(), 3) == 0);

#if LTEXPORT_TRT_ALIASED_IO
    auto* v2 = dynamic_cast<IPluginV3OneBuildV2*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    CHECK(v2 != nullptr && v2->getAliasedInput(0) == -1 && v2->getAliasedInput(1) == 3 && v2->getAliasedInput(2) == 4);
#endif
}

// Random fp32 buffers for one problem (host memory: the emulated kernels run on the CPU).
struct Buffers
{
    std::vector<float> q, k, v, pk, pv, out, presentK, presentV;
    std::vector<int64_t> pastLen;
    std::vector<unsigned char> workspace;

    Buffers(Problem const& p, std::vector<int64_t> lens, size_t workspaceBytes)
        : pastLen(std::move(lens))
        , workspace(workspaceBytes + 16)
    {
        std::mt19937 gen(7);
        std::normal_distribution<float> n;
        auto fill = [&](std::vector<float>& x, int64_t count) {
            x.resize(static_cast<size_t>(count));
            for (float& e : x)
                e = n(gen);
        };
        fill(q, p.b * p.hq * p.t * p.d);
        fill(k, p.b * p.hkv * p.t * p.d);
        fill(v, p.b * p.hkv * p.t * p.d);
        fill(pk, p.b * p.hkv * p.ring * p.d);
        fill(pv, p.b * p.hkv * p.ring * p.d);
        out.assign(q.size(), 0.f);
        presentK.assign(pk.size(), 0.f);
        presentV.assign(pv.size(), 0.f);
    }
};

void testEnqueue(int32_t window, Problem const& p, std::vector<int64_t> const& lens, bool streaming)
{
    SinkWindowAttentionCreator creator;
    Fields f;
    f.window = window;
    auto plugin = create(creator, f.base(streaming ? &f.streaming : &f.dense));
    auto* build = dynamic_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* rt = dynamic_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    auto dynIn = p.dynamicInputs(1, p.t);
    auto dynOut = p.dynamicOutputs(1, p.t);
    size_t const ws = build->getWorkspaceSize(dynIn.data(), 6, dynOut.data(), 3);
    auto inDesc = p.inputs();
    auto outDesc = p.outputs();
    CHECK(rt->onShapeChange(inDesc.data(), 6, outDesc.data(), 3) == 0);

    Buffers viaPlugin(p, lens, ws);
    void const* ins[6] = {viaPlugin.q.data(), viaPlugin.k.data(), viaPlugin.v.data(), viaPlugin.pk.data(),
        viaPlugin.pv.data(), viaPlugin.pastLen.data()};
    void* outs[3] = {viaPlugin.out.data(), viaPlugin.presentK.data(), viaPlugin.presentV.data()};
    CHECK(rt->enqueue(inDesc.data(), outDesc.data(), ins, outs, viaPlugin.workspace.data(), nullptr) == 0);

    // The same call through the C API: the glue must pass the same dims, attributes and pointers.
    Buffers direct(p, lens, ws);
    LtSinkWindowParams c{};
    c.dtype = LT_DTYPE_FP32;
    c.batch = static_cast<int>(p.b);
    c.q_heads = static_cast<int>(p.hq);
    c.kv_heads = static_cast<int>(p.hkv);
    c.seq_len = static_cast<int>(p.t);
    c.head_dim = static_cast<int>(p.d);
    c.sink = f.sink;
    c.window = window;
    c.prefill_mode = streaming ? LT_PREFILL_STREAMING : LT_PREFILL_DENSE;
    c.scale = f.scale;
    c.query = direct.q.data();
    c.key = direct.k.data();
    c.value = direct.v.data();
    c.past_key = direct.pk.data();
    c.past_value = direct.pv.data();
    c.past_len = direct.pastLen.data();
    c.output = direct.out.data();
    c.present_key = direct.presentK.data();
    c.present_value = direct.presentV.data();
    c.workspace = direct.workspace.data();
    c.workspace_size = direct.workspace.size();
    CHECK(lt_sink_window_attention(&c, nullptr) == cudaSuccess);
    CHECK(viaPlugin.out == direct.out && viaPlugin.presentK == direct.presentK && viaPlugin.presentV == direct.presentV);
    bool finite = true;
    for (float x : viaPlugin.out)
        finite = finite && std::isfinite(x);
    CHECK(finite);

    // Aliased outputs (in-place ring update) give the same result.
    Buffers inPlace(p, lens, ws);
    void const* ins2[6] = {inPlace.q.data(), inPlace.k.data(), inPlace.v.data(), inPlace.pk.data(), inPlace.pv.data(),
        inPlace.pastLen.data()};
    void* outs2[3] = {inPlace.out.data(), inPlace.pk.data(), inPlace.pv.data()};
    CHECK(rt->enqueue(inDesc.data(), outDesc.data(), ins2, outs2, inPlace.workspace.data(), nullptr) == 0);
    CHECK(inPlace.out == direct.out && inPlace.pk == direct.presentK && inPlace.pv == direct.presentV);

    // A cache whose length is not sink + window is refused before any kernel runs.
    Problem wrong = p;
    wrong.ring += 1;
    auto wrongIn = wrong.inputs();
    auto wrongOut = wrong.outputs();
    CHECK(rt->onShapeChange(wrongIn.data(), 6, wrongOut.data(), 3) != 0);
    gLastLog.clear();
    CHECK(rt->onShapeChange(inDesc.data(), 6, nullptr, 3) != 0);
    CHECK(gLastLog.find("onShapeChange: missing output descriptors") != std::string::npos);
    CHECK(rt->enqueue(wrongIn.data(), wrongOut.data(), ins, outs, viaPlugin.workspace.data(), nullptr) != 0);
}

} // namespace

int main()
{
    testCreator();
    testCapabilitiesAndSerialization();
    testBuildNegotiation();
    testEnqueue(3, Problem{2, 4, 2, 3, 8, 5}, {1, 9}, false);   // prefill, dense
    testEnqueue(3, Problem{2, 6, 2, 7, 8, 5}, {0, 12}, true);   // prefill, streaming, GQA 3
    testEnqueue(254, Problem{2, 4, 2, 1, 8, 256}, {3, 700}, false); // decode with split-KV workspace
    if (gFailures == 0)
    {
        std::printf("plugin glue: all checks passed\n");
    }
    return gFailures == 0 ? 0 : 1;
}

namespace ltexport
{
void pluginLog(ILogger::Severity severity, std::string const& message) noexcept
{
    if (severity == ILogger::Severity::kVERBOSE)
    {
        gTrace.push_back(message);
    }
    else
    {
        gLastLog = message;
    }
}
} // namespace ltexport
