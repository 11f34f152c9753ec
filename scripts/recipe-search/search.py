# The recipe search behind the bundled model (models/MODEL_CARD.md), in PyTorch on a GPU: the
# same network as `boneage train --arch resnet18 --head gap --use-sex` (one channel, GAP, sex
# embedding 16, dense 256, dropout 0.2, zero-initialised output) on the project's prepared
# caches, packed by export.py. Ids are split with the C++ trainer's hash: [0, 0.2) is the final
# validation set and is never touched here; [0.2, 0.4) is the tuning set every row is scored on;
# the rest of the radiographs and every thumbnail whose id is not held out train.
#
#   python3 search.py data.npz [ROWS]     (ROWS: e.g. 0,2,6; writes $OUT/results.json)
#
# Without a GPU it runs a tiny smoke test on the CPU.
import os, sys, json, time, math, numpy as np, torch, torch.nn as nn, torch.nn.functional as F, cv2, torchvision
from concurrent.futures import ThreadPoolExecutor
torch.backends.cudnn.benchmark = True
OUT = os.environ.get('OUT', '/tmp/out'); os.makedirs(OUT, exist_ok=True)
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
SMOKE = dev == 'cpu'
def unit(id_):
    h = 0xcbf29ce484222325; M = (1 << 64) - 1
    for c in id_.encode(): h ^= c; h = (h * 0x100000001b3) & M
    h ^= h >> 33; h = (h * 0xff51afd7ed558ccd) & M; h ^= h >> 33; h = (h * 0xc4ceb9fe1a85ec53) & M; h ^= h >> 33
    return (h >> 11) * 2.0 ** -53
z = np.load(sys.argv[1])
def decode(prefix):
    lens = z[prefix + 'lens']; data = z[prefix + 'data']; offs = np.concatenate([[0], np.cumsum(lens)])
    with ThreadPoolExecutor(16) as ex:
        ims = list(ex.map(lambda i: cv2.imdecode(data[offs[i]:offs[i + 1]], 0), range(len(lens))))
    return (torch.from_numpy(np.stack(ims)).to(dev), torch.tensor(z[prefix + 'ages']).to(dev),
            torch.tensor(z[prefix + 'male'].astype(np.float32)).to(dev), [str(s) for s in z[prefix + 'ids']])
R = decode('r_'); T = decode('t_')
ru = np.array([unit(i) for i in R[3]]); tu = np.array([unit(i) for i in T[3]])
final = ru < 0.2; tune = (ru >= 0.2) & (ru < 0.4); rtrain = ru >= 0.4; held = set(np.array(R[3])[ru < 0.4]); ttrain = np.array([i not in held for i in T[3]])
print('radiographs final/tune/train', final.sum(), tune.sum(), rtrain.sum(), 'thumbs train', ttrain.sum(), flush=True)
def sel(D, mask):
    idx = torch.tensor(np.nonzero(mask)[0], device=dev); return D[0][idx], D[1][idx], D[2][idx]
Rtr, Rtu, Ttr = sel(R, rtrain), sel(R, tune), sel(T, ttrain)
MU, SD = float(Rtr[1].mean()), float(Rtr[1].std())
class Net(nn.Module):
    def __init__(s, width=1.0):
        super().__init__()
        m = torchvision.models.resnet18(num_classes=1); m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        m.fc = nn.Identity(); s.trunk = m
        s.sex = nn.Linear(1, 16); s.d1 = nn.Linear(512 + 16, 256); s.drop = nn.Dropout(0.2); s.out = nn.Linear(256, 1)
        nn.init.zeros_(s.out.weight); nn.init.zeros_(s.out.bias)
    def forward(s, x, sex):
        f = s.trunk(x); f = torch.cat([f, F.relu(s.sex(sex[:, None]))], 1)
        return s.out(s.drop(F.relu(s.d1(f)))).squeeze(1) * SD + MU
AUG = dict(default=dict(rot=10, shift=.05, scale=.05, con=.1, bri=.1, flip=0),
           strong=dict(rot=20, shift=.08, scale=.15, con=.2, bri=.1, flip=0))
def batch(ims, size, aug):
    x = ims.float()[:, None] / 255.
    if x.shape[-1] != size: x = F.interpolate(x, size=(size, size), mode='bilinear', antialias=True, align_corners=False)
    if aug:
        n = x.shape[0]; a = AUG[aug]; r = lambda m: (torch.rand(n, device=dev) * 2 - 1) * m
        th = r(a['rot']) * math.pi / 180; sc = 1 + r(a['scale'])
        A = torch.zeros(n, 2, 3, device=dev)
        A[:, 0, 0] = torch.cos(th) / sc; A[:, 0, 1] = -torch.sin(th) / sc; A[:, 1, 0] = torch.sin(th) / sc; A[:, 1, 1] = torch.cos(th) / sc
        A[:, 0, 2] = r(a['shift']) * 2; A[:, 1, 2] = r(a['shift']) * 2
        x = F.grid_sample(x, F.affine_grid(A, x.shape, align_corners=False), align_corners=False)
        x = ((x - .5) * (1 + r(a['con']))[:, None, None, None] + .5 + r(a['bri'])[:, None, None, None]).clamp(0, 1)
    return x.contiguous(memory_format=torch.channels_last)
def loss_fn(kind, p, t):
    if kind == 'l1': return (p - t).abs().mean() / SD
    return ((torch.log1p(p.clamp_min(1e-7)) - torch.log1p(t)) ** 2).mean()
def evaluate(net, D, size):
    net.eval(); ps = []
    with torch.no_grad(), torch.autocast(dev, torch.bfloat16):
        for i in range(0, len(D[0]), 64): ps.append(net(batch(D[0][i:i + 64], size, None), D[2][i:i + 64]).float())
    p = torch.cat(ps); e = p - D[1]; net.train()
    return float(e.abs().mean()), float(e.pow(2).mean().sqrt())
def fit(net, D, size, epochs, bs, lr, aug, loss, log, val=None, wd=1e-4):
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    n = len(D[0]); steps = n // bs; total = epochs * steps; warm = min(steps, total // 10); k = 0
    for ep in range(epochs):
        perm = torch.randperm(n, device=dev); tl = 0
        for s in range(steps):
            i = perm[s * bs:(s + 1) * bs]
            cur = lr * (k + 1) / warm if k < warm else lr * 0.5 * (1 + math.cos(math.pi * (k - warm) / max(1, total - warm)))
            for g in opt.param_groups: g['lr'] = cur
            with torch.autocast(dev, torch.bfloat16):
                p = net(batch(D[0][i], size, aug), D[2][i]).float()
            l = loss_fn(loss, p, D[1][i]); opt.zero_grad(set_to_none=True); l.backward(); opt.step(); k += 1
            
        if val is not None and (ep % 5 == 4 or ep == epochs - 1):
            log.append((ep + 1, evaluate(net, val, size))); print('   ep', ep + 1, log[-1][1], flush=True)
def run(name, pre_epochs=0, pre_size=128, ft_size=320, ft_epochs=40, aug='default', loss='l1', lr=1e-3, ft_lr=5e-4, seed=0, rad_in_pre=False):
    torch.manual_seed(seed); t0 = time.time(); net = Net().to(dev).to(memory_format=torch.channels_last); log = []
    if pre_epochs:
        P = Ttr
        fit(net, P, pre_size, pre_epochs, 64, lr, aug, loss, log)
        log.append(('pre', evaluate(net, Rtu, pre_size)))
        print('  after pretrain, tune@%d' % pre_size, log[-1][1], flush=True)
    fit(net, Rtr, ft_size, ft_epochs, 16, ft_lr if pre_epochs else lr, aug, loss, log, val=Rtu)
    mae, rmse = evaluate(net, Rtu, ft_size)
    res = dict(name=name, pre_epochs=pre_epochs, pre_size=pre_size, ft_size=ft_size, ft_epochs=ft_epochs, aug=aug, loss=loss,
               lr=lr, ft_lr=ft_lr, tune_mae=mae, tune_rmse=rmse, seconds=time.time() - t0, log=log)
    print(name, 'tune MAE %.2f RMSE %.2f (%.0f s)' % (mae, rmse, res['seconds']), flush=True)
    return res
results = []
plan = [
    dict(name='pre 8@128, ft 20@320', pre_epochs=8, ft_epochs=20),
    dict(name='pre 20@128, ft 40@320', pre_epochs=20, ft_epochs=40),
    dict(name='pre 20@128, ft 40@320, strong aug', pre_epochs=20, ft_epochs=40, aug='strong'),
    dict(name='pre 20@128, ft 40@256', pre_epochs=20, ft_epochs=40, ft_size=256),
    dict(name='pre 20@128, ft 40@320, msle', pre_epochs=20, ft_epochs=40, loss='msle'),
    dict(name='no pretrain, 60@320', pre_epochs=0, ft_epochs=60),
    dict(name='pre 8@128, ft 20@320, strong aug', pre_epochs=8, ft_epochs=20, aug='strong'),
    dict(name='pre 20@128, ft 40@320, strong aug, ft lr 2e-4', pre_epochs=20, ft_epochs=40, aug='strong', ft_lr=2e-4),
    dict(name='pre 12@128, ft 30@320, strong aug, ft lr 2e-4', pre_epochs=12, ft_epochs=30, aug='strong', ft_lr=2e-4),
]
if len(sys.argv) > 2:  # a comma-separated choice of plan rows, from 0
    plan = [plan[int(k)] for k in sys.argv[2].split(',')]
if SMOKE:
    plan = [dict(name='smoke', pre_epochs=1, ft_epochs=1, ft_size=64, pre_size=32)]
    Ttr = tuple(t[:256] for t in Ttr); Rtr = tuple(t[:64] for t in Rtr); Rtu = tuple(t[:32] for t in Rtu)
for p in plan:
    results.append(run(**p))
    json.dump(dict(split=dict(final=int(final.sum()), tune=int(tune.sum()), train=int(rtrain.sum()), thumbs=int(ttrain.sum()), mu=MU, sd=SD),
                   results=results), open(OUT + '/results.json', 'w'), indent=1)
